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

# checksum_start sum|none [gate]: chooses how the checksum stage runs. To sum: with
# python3, one pass in-line (hash.py); else `tee` to FIFOs read by `openssl
# dgst`/`sha256sum` and `wc -c`, started here and waited for by pipeline_finish. With
# `none` (the library sums the stream as it feeds it, and the next stage reads it from
# the library), the stage does nothing and writes no sum. With `gate` (a fetch), the
# stage hands gpg nothing before the stream's first packets are an encrypted
# message's, and exits 3 with the reason on stderr when they are not, 4 when the
# stream ended before they were whole (hash.py's `judge`; without python3,
# openpgp_gate).
checksum_start() {
  inline=0
  gate=${2:-}
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
    "$SB_PYTHON" -I -c "$SB_HASH_PY" "$w/sha256" "$w/length" "${SB_PROGRESS:-}" "$gate"
  elif [ "$inline" = 0 ] && [ "$gate" = gate ]; then
    openpgp_gate | tee "$w/sha.fifo" "$w/len.fifo"
  elif [ "$inline" = 0 ]; then
    tee "$w/sha.fifo" "$w/len.fifo"
  fi
}

# openpgp_gate: hash.py's gate where the workload has no python3 (the same rule as
# its `judge` and src/backup/packets.rs, held to the same cases by a test): reads the
# stream's first 4096 bytes (fewer when it is shorter), and exits 3 (4 when they end
# before its first packets are whole) with the reason on stderr unless they start with one to 16 symmetric-key encrypted session key packets
# (tag 3) followed by encrypted data (tag 18 or 20); else hands them and the rest on
# (one more copy of the stream, in this fallback only).
openpgp_gate() {
  local head=$w/gate.head b n at=0 keys=0 ctb tag hl body o i why="" code=3
  dd bs=4096 count=1 iflag=fullblock of="$head" status=none || return 1
  mapfile -t b < <(od -An -v -tu1 -w1 -- "$head" | tr -d ' ')
  n=${#b[@]}
  while [ -z "$why" ]; do
    hl=0
    if [ "$at" -lt "$n" ]; then
      ctb=${b[at]}
      if ((!(ctb & 128))); then
        why=$(printf 'its byte %#04x is no OpenPGP packet header (not binary OpenPGP data)' "$ctb")
        if [ "$at" -ne 0 ]; then why="at byte $at, $why"; fi
        break
      elif ((!(ctb & 64))); then
        tag=$(((ctb >> 2) & 15)) body=-1 o=$((ctb & 3))
        if [ "$o" -eq 3 ]; then
          hl=1
        elif ((at + (1 << o) < n)); then
          hl=$((1 + (1 << o))) body=0
          for ((i = at + 1; i < at + hl; i++)); do body=$(((body << 8) | b[i])); done
        fi
      elif ((at + 1 < n)); then
        tag=$((ctb & 63)) o=${b[at + 1]} body=-1
        if ((o < 192)); then
          hl=2 body=$o
        elif ((o < 224)); then
          if ((at + 2 < n)); then hl=3 body=$((((o - 192) << 8) + b[at + 2] + 192)); fi
        elif ((o == 255)); then
          if ((at + 5 < n)); then
            hl=6 body=$(((b[at + 2] << 24) | (b[at + 3] << 16) | (b[at + 4] << 8) | b[at + 5]))
          fi
        else
          hl=2
        fi
      fi
    fi
    if [ "$hl" -eq 0 ]; then
      if [ "$n" -lt 4096 ]; then
        why="it ends after $n bytes, before its first packets are whole" code=4
      else
        why="its first 4096 bytes hold no encrypted data packet"
      fi
    elif [ "$tag" -eq 3 ] && [ "$keys" -lt 16 ]; then
      if [ "$body" -lt 0 ]; then
        why="its session key packet has no definite length"
      fi
      at=$((at + hl + body)) keys=$((keys + 1))
      if [ -z "$why" ] && [ "$at" -ge 4096 ]; then
        why="its session key packets run past its first 4096 bytes"
      fi
    elif { [ "$tag" -eq 18 ] || [ "$tag" -eq 20 ]; } && [ "$keys" -gt 0 ]; then
      break
    elif [ "$tag" -eq 3 ]; then
      why="it starts with more than 16 session key packets"
    elif [ "$keys" -eq 0 ]; then
      why="its first packet is $(packet_name "$tag") (tag $tag), where an encrypted backup starts with a symmetric-key encrypted session key (tag 3)"
    else
      why="its session key is followed by $(packet_name "$tag") (tag $tag), not by encrypted data (tag 18)"
    fi
  done
  if [ -n "$why" ]; then
    rm -f -- "$head"
    printf '%s\n' "$why" >&2
    return "$code"
  fi
  cat -- "$head"
  rm -f -- "$head"
  cat
}

# packet_name TAG: an OpenPGP packet tag's name, as openpgp_gate gives it.
packet_name() {
  case $1 in
    1) echo "a public-key encrypted session key" ;;
    2) echo "a signature" ;;
    3) echo "a symmetric-key encrypted session key" ;;
    4) echo "a one-pass signature" ;;
    5 | 7) echo "a secret key" ;;
    6 | 14) echo "a public key" ;;
    8) echo "a compressed data packet" ;;
    9) echo "symmetrically encrypted data without integrity protection" ;;
    10) echo "a marker packet" ;;
    11) echo "a literal data packet" ;;
    12) echo "a trust packet" ;;
    13) echo "a user id" ;;
    17) echo "a user attribute" ;;
    18) echo "symmetrically encrypted and integrity protected data" ;;
    19) echo "a modification detection code" ;;
    20) echo "AEAD encrypted data" ;;
    21) echo "a padding packet" ;;
    *) echo "an unknown packet" ;;
  esac
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
