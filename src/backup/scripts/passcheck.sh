# shellcheck shell=bash
# passcheck.sh: does a passphrase open a backup? Decrypts what of the object's head gpg
# can, and keeps the start of the archive's first member (the inner manifest, in
# backups of this crate):
#   <head> | gpg --decrypt [| zstd -dcf] | tar --extract --to-stdout
# (with zstd when the workload has it: a backup made with zstd is decompressed, any
# other stream passed through as it is; without zstd, such a backup's head reads as
# no inner manifest).
# gpg and tar fail at the cut end of the stream: only gpg's status lines (in
# $SB_WORK/gpg.status) and the first 64 KiB of the member's content ($SB_WORK/head) are
# read by the caller.
#
# Standard input: the passphrase and a newline (kept on fd 3 for gpg, never on disk),
# then the head of the object (the library read it: no aws CLI runs here).
# Environment: SB_WORK (work dir), SB_MEMBER (the inner manifest's member name),
# SB_TAR, SB_GPG, SB_ZSTD.
# Exit code: 0 (whatever gpg and tar said).
set -euo pipefail
umask 077
w=$SB_WORK
IFS= read -r pass
exec 3< <(printf '%s\n' "$pass")
unset pass
cat >"$w/part"
exec </dev/null
unzstd() {
  if command -v "${SB_ZSTD:-zstd}" >/dev/null 2>&1; then
    "${SB_ZSTD:-zstd}" -q -d -c -f 2>"$w/zstd.err"
  else
    cat
  fi
}
set +e
"$SB_GPG" --batch --no-tty --no-symkey-cache --pinentry-mode loopback \
  --passphrase-fd 3 --status-file "$w/gpg.status" --decrypt "$w/part" 2>"$w/gpg.err" |
  unzstd |
  LC_ALL=C "$SB_TAR" --extract --to-stdout -- "$SB_MEMBER" 2>"$w/tar.err" |
  head -c 65536 >"$w/head"
set -e
rm -f -- "$w/part"
exit 0
