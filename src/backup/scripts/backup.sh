# shellcheck shell=bash
# backup.sh (appended to common.sh): the backup pipeline
#   tar [| zstd] | gpg --symmetric | checksum | aws s3 cp - URL
# where the checksum stage writes the encrypted stream's SHA-256 and length; with
# SB_OUTPUT=stdout (the library uploads, and sums and counts what it reads) the
# pipeline is `tar | gpg`, the ciphertext goes to our standard output, nothing else
# does, and neither a checksum nor an aws stage runs (then SB_AWS, SB_URL,
# SB_EXPECTED_SIZE, SB_PYTHON, SB_HASH_PY and the AWS_* variables are not needed, and no
# `sha256` or `length` is written).
#
# Standard input: the passphrase and a newline (kept on fd 3 for gpg, never on disk).
# Environment: SB_WORK (work dir: `inner/`, `files`, `snapfiles`, `snap/`, and for an
# incremental backup `inner-manifest.json` to move into `inner/` and `newmedia`: the
# NUL-separated media files its pack archives, without recursion), SB_ROOT,
# SB_TAR, SB_GPG, SB_AWS, SB_PYTHON, SB_ZSTD (with SB_ZSTD_LEVEL: tar's stream goes
# through `zstd -LEVEL` before gpg, which then compresses nothing), SB_HASH_PY, SB_URL, SB_EXPECTED_SIZE, and the aws
# CLI's AWS_* variables; optionally SB_SNAP, the dir whose `snapfiles` and `snap/` are
# archived (default SB_WORK; empty: none): an incremental backup's own pack is made
# with it empty and its database pack in a work dir of its own with it the backup's.
# Positional parameters: gpg's extra arguments, `--`, the aws CLI's extra arguments
# (none with SB_OUTPUT=stdout).
# Output in the work dir: `index` (tar's -vv listing of the archive), `tar.status` and
# `tar.err` (tar's exit status and stderr: 1 or 2 are left to the caller to judge).
# Exit codes: 0; 10 + stage (10 tar, or zstd beside it, 11 gpg, 12 checksum, 13
# upload; only tar and gpg with SB_OUTPUT=stdout) for the stage that
# failed for a reason of its own, with `<stage> <status>` in $SB_WORK/failed (`zstd
# <status>` when zstd failed) and its stderr on ours; 14 when the checksum readers
# failed.
set -euo pipefail
umask 077
# The passphrase stays in the pipe it came in on: gpg reads it from fd 3.
exec 3<&0 </dev/null
if [ "${SB_OUTPUT:-}" = stdout ]; then
  # The ciphertext alone goes to the standard output, kept on fd 5.
  exec 5>&1 >/dev/null
fi
w=$SB_WORK
gpg_extra=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do gpg_extra+=("$1"); shift; done
[ "$#" -gt 0 ] && shift
rm -f -- "$w/zstd.status"
if [ -n "${SB_ZSTD_LEVEL:-}" ]; then need_zstd 0 "this backup is to be made with it"; fi
if [ -e "$w/inner-manifest.json" ]; then
  mkdir -p -- "$w/inner/.synapse-backup"
  mv -- "$w/inner-manifest.json" "$w/inner/.synapse-backup/manifest.json"
fi
if [ "${SB_OUTPUT:-}" = stdout ]; then checksum_start none; else checksum_start sum; fi
# The inner manifest is the stream's first member; tar's own listing of what it
# archived goes to $w/index; hard links are archived as files.
tar_args=(--create --sort=name --hard-dereference -vv --numeric-owner --quoting-style=escape
  --index-file "$w/index"
  --directory "$w/inner" .synapse-backup/manifest.json
  --null --verbatim-files-from --directory "$SB_ROOT" --files-from "$w/files")
# An incremental pack's media: exactly the files its plan names, no directories.
if [ -e "$w/newmedia" ]; then tar_args+=(--no-recursion --files-from "$w/newmedia"); fi
# (--recursion is positional: given only when members follow, or tar refuses it.)
snap=${SB_SNAP-$w}
if [ -n "$snap" ] && [ -s "$snap/snapfiles" ]; then
  tar_args+=(--recursion --directory "$snap/snap" --files-from "$snap/snapfiles")
fi
# archive: tar's stream, through zstd with SB_ZSTD_LEVEL. Its status is tar's, or 3
# when zstd failed (its own status then in $w/zstd.status, read by zstd_stage): tar's
# 1 and 2 (a live tree) must not pass for a whole archive when zstd did not finish it.
archive() {
  if [ -z "${SB_ZSTD_LEVEL:-}" ]; then
    LC_ALL=C "$SB_TAR" "${tar_args[@]}" 2>"$w/tar.err" 3<&-
    return
  fi
  local s
  LC_ALL=C "$SB_TAR" "${tar_args[@]}" 2>"$w/tar.err" 3<&- |
    "$SB_ZSTD" -q -c "-$SB_ZSTD_LEVEL" 2>"$w/zstd.err" 3<&-
  s=("${PIPESTATUS[@]}")
  if [ "${s[1]}" -ne 0 ]; then
    printf '%s\n' "${s[1]}" >"$w/zstd.status"
    return 3
  fi
  return "${s[0]}"
}
# The key is derived from the passphrase with SHA-256 (iterated and salted, gpg's
# `--s2k-count`), not gpg's default SHA-1: SHA-256 runs in the CPU's SHA extensions,
# so deriving the key costs us half the time (0.28 against 0.55 CPU-s at 65011712,
# measured), and a guesser on a GPU more than with SHA-1. Restores of backups made
# with SHA-1 read the algorithm from the packet, as plain gpg does.
encrypt() {
  "$SB_GPG" --batch --no-tty --no-symkey-cache --pinentry-mode loopback \
    --passphrase-fd 3 --symmetric --cipher-algo AES256 --s2k-mode 3 \
    --s2k-digest-algo SHA256 "${gpg_extra[@]}" --output - 2>"$w/gpg.err"
}
# Stage names and stderr files, in pipeline order (read by common.sh's pipeline_finish).
# shellcheck disable=SC2034
names=(tar gpg tee upload)
# shellcheck disable=SC2034
errs=("$w/tar.err" "$w/gpg.err" "$w/tee.err" "$w/aws.err")
set +e
if [ "${SB_OUTPUT:-}" = stdout ]; then
  archive 5>&- | encrypt >&5 5>&-
  st=("${PIPESTATUS[@]}")
else
  archive | encrypt |
    checksum 2>"$w/tee.err" 3<&- |
    "$SB_AWS" s3 cp --only-show-errors --no-progress --expected-size "$SB_EXPECTED_SIZE" "$@" - "$SB_URL" \
      >"$w/aws.out" 2>"$w/aws.err" 3<&-
  st=("${PIPESTATUS[@]}")
fi
exec 5>&-
set -e
# GNU tar exits 1 when files changed, appeared or vanished while it read them, and 2
# for a member it could not read at all; either way the archive is whole. The caller
# reads tar.err to tell a live tree's warnings from a real failure.
printf '%s\n' "${st[0]}" >"$w/tar.status"
if [ "${st[0]}" -eq 1 ] || [ "${st[0]}" -eq 2 ]; then st[0]=0; fi
zstd_stage 0
pipeline_finish downstream
