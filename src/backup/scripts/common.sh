# shellcheck shell=bash
# Functions shared by backup.sh and fetch.sh, which are appended to this file to make
# one script (see src/backup/scripts.rs); nothing here runs on its own.
#
# Globals the including script sets: w (its work dir), names and errs (stage names and
# stderr files, in pipeline order), st (a copy of PIPESTATUS).
# Environment: SB_PYTHON (python3), SB_HASH_PY (the text of hash.py), and optionally
# SB_PROGRESS (a file in the work dir for the running byte count; hash.py only: the
# tee fallback counts nothing before the end).
# shellcheck disable=SC2154

# checksum_start sum|none: chooses how the checksum stage runs. To sum: with python3,
# one pass in-line (hash.py); else `tee` to FIFOs read by `openssl dgst`/`sha256sum`
# and `wc -c`, started here and waited for by pipeline_finish. With `none` (the library
# sums the stream as it feeds it, and the next stage reads it from the library), the
# stage does nothing and writes no sum.
checksum_start() {
  inline=0
  if [ "$1" = none ]; then
    inline=none
  elif "$SB_PYTHON" -I -c 'import fcntl, hashlib, signal' >/dev/null 2>&1; then
    inline=1
  fi
  if [ "$inline" = 0 ]; then
    mkfifo "$w/sha.fifo" "$w/len.fifo"
    if command -v openssl >/dev/null 2>&1; then
      openssl dgst -sha256 -r <"$w/sha.fifo" >"$w/sha256" &
    else
      sha256sum <"$w/sha.fifo" >"$w/sha256" &
    fi
    sha_pid=$!
    wc -c <"$w/len.fifo" >"$w/length" &
    len_pid=$!
  fi
}

# checksum: the checksum stage of the pipeline (stdin to stdout), writing the stream's
# SHA-256 to $w/sha256 and its length to $w/length (and, with hash.py, the running
# count to $SB_PROGRESS when set).
checksum() {
  if [ "$inline" = 1 ]; then
    "$SB_PYTHON" -I -c "$SB_HASH_PY" "$w/sha256" "$w/length" "${SB_PROGRESS:-}"
  elif [ "$inline" = 0 ]; then
    tee "$w/sha.fifo" "$w/len.fifo"
  fi
}

# need_zstd POSITION WHY: when the workload has no zstd ($SB_ZSTD), fails as the stage
# at POSITION would (`zstd 127` in $w/failed, exit 10 + POSITION), saying WHY zstd is
# needed, before anything runs.
need_zstd() {
  if ! command -v "$SB_ZSTD" >/dev/null 2>&1; then
    printf 'zstd 127\n' >"$w/failed"
    echo "zstd ($SB_ZSTD) is not in the workload, and $2: install it (e.g. apt-get install zstd) or pass its path" >&2
    exit $((10 + $1))
  fi
}

# zstd_stage POSITION: run right after the pipeline, before pipeline_finish. zstd runs
# inside the stage at POSITION, beside tar (`tar | zstd` or `zstd -d | tar`), and when
# it failed for a reason of its own it wrote its status to $w/zstd.status: then it is
# that stage's cause, under its own name, status and stderr.
zstd_stage() {
  if [ -s "$w/zstd.status" ]; then
    names[$1]=zstd
    errs[$1]=$w/zstd.err
    st[$1]=$(<"$w/zstd.status")
  fi
}

# pipeline_finish RULE: run right after the pipeline with st=("${PIPESTATUS[@]}").
# Waits for the checksum readers, then names the stage that failed for a reason of its
# own, writes `<stage> <status>` to $w/failed, copies that stage's stderr to ours and
# exits 10 + its position; exits 14 when only the checksum readers failed; returns 0
# when everything succeeded.
# RULE `downstream`: the most downstream non-zero stage is the cause (an upstream
#   stage then only saw a broken pipe: SIGPIPE, or gpg's exit 2 on a write error);
#   right where a stage cannot fail because its input ended early (the backup).
# RULE `upstream`: the first stage that did not die of SIGPIPE is the cause; right
#   where a truncated input makes every later stage fail (the fetch).
pipeline_finish() {
  local sha_st=0 len_st=0 failed="" i
  if [ "$inline" = 0 ]; then
    exec 3<>"$w/sha.fifo" 4<>"$w/len.fifo"
    exec 3>&- 4>&-
    wait "$sha_pid" || sha_st=$?
    wait "$len_pid" || len_st=$?
  fi
  if [ "$1" = downstream ]; then
    for ((i = ${#st[@]} - 1; i >= 0; i--)); do
      if [ "${st[$i]}" -ne 0 ]; then failed=$i; break; fi
    done
  else
    for ((i = 0; i < ${#st[@]}; i++)); do
      if [ "${st[$i]}" -ne 0 ] && [ "${st[$i]}" -ne 141 ]; then failed=$i; break; fi
    done
    if [ -z "$failed" ]; then
      for ((i = ${#st[@]} - 1; i >= 0; i--)); do
        if [ "${st[$i]}" -ne 0 ]; then failed=$i; break; fi
      done
    fi
  fi
  if [ -n "$failed" ]; then
    printf '%s %s\n' "${names[$failed]}" "${st[$failed]}" >"$w/failed"
    tail -c 4096 "${errs[$failed]}" >&2
    exit $((10 + failed))
  fi
  if [ "$sha_st" -ne 0 ] || [ "$len_st" -ne 0 ]; then
    echo "the checksum of the encrypted stream could not be computed" >&2
    exit 14
  fi
}
