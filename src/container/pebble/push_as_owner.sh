# shellcheck shell=bash
# Run by PebbleContainer::push as `bash -c "$(cat push_as_owner.sh)" synapse-backup-push
# PATH MODE MAKE_DIRS`, as the file's owner-to-be, with the content on standard input:
# writes a temporary file in the target's directory, sets its mode, and renames it over
# the target (a symlink there is replaced, not followed). Running as the owner, nothing
# that user can swap in is followed with more rights than theirs.
set -euo pipefail
target=$1
mode=$2
make_dirs=$3
dir=${target%/*}
[ -n "$dir" ] || dir=/
if [ "$make_dirs" = 1 ]; then
  mkdir -p -- "$dir"
elif [ ! -d "$dir" ]; then
  echo "not-found: $dir" >&2
  exit 2
fi
tmp=$(umask 077 && mktemp -- "$dir/.synapse-backup-push.XXXXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp"
chmod -- "$mode" "$tmp"
mv -f -T -- "$tmp" "$target"
trap - EXIT
