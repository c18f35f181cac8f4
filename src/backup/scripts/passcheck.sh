# shellcheck shell=bash
# passcheck.sh: does a passphrase open a backup? Reads the head of the object (a ranged
# GET of its first SB_HEAD_BYTES), decrypts what of it gpg can, and keeps the start of
# the archive's first member (the inner manifest, in backups of this crate):
#   aws s3api get-object --range | gpg --decrypt | tar --extract --to-stdout
# gpg and tar fail at the cut end of the stream: only gpg's status lines (in
# $SB_WORK/gpg.status) and the first 64 KiB of the member's content ($SB_WORK/head) are
# read by the caller.
#
# Standard input: the passphrase and a newline (kept on fd 3 for gpg, never on disk);
# with SB_INPUT=stdin, the head of the object follows that line (the library read
# it), and no aws CLI runs.
# Environment: SB_WORK (work dir), SB_MEMBER (the inner manifest's member name),
# SB_TAR, SB_GPG; without SB_INPUT=stdin, SB_BUCKET, SB_KEY, SB_HEAD_BYTES, SB_AWS and
# the aws CLI's AWS_* variables.
# Positional parameters: the aws CLI's extra arguments (none with SB_INPUT=stdin).
# Exit codes: 0 (whatever gpg and tar said); 15 the download failed (aws's stderr on
# ours).
set -euo pipefail
umask 077
w=$SB_WORK
if [ "${SB_INPUT:-}" = stdin ]; then
  IFS= read -r pass
  exec 3< <(printf '%s\n' "$pass")
  unset pass
  cat >"$w/part"
  exec </dev/null
else
  # The passphrase stays in the pipe it came in on: gpg reads it from fd 3.
  exec 3<&0 </dev/null
fi
if [ "${SB_INPUT:-}" != stdin ] && ! "$SB_AWS" s3api get-object "$@" --bucket "$SB_BUCKET" --key "$SB_KEY" \
  --range "bytes=0-$((SB_HEAD_BYTES - 1))" "$w/part" >/dev/null 2>"$w/aws.err"; then
  cat -- "$w/aws.err" >&2
  exit 15
fi
set +e
"$SB_GPG" --batch --no-tty --no-symkey-cache --pinentry-mode loopback \
  --passphrase-fd 3 --status-file "$w/gpg.status" --decrypt "$w/part" 2>"$w/gpg.err" |
  LC_ALL=C "$SB_TAR" --extract --to-stdout -- "$SB_MEMBER" 2>"$w/tar.err" |
  head -c 65536 >"$w/head"
set -e
rm -f -- "$w/part"
exit 0
