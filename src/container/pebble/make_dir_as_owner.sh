# shellcheck shell=bash
# Run by PebbleContainer::make_dir as `bash -c "$(cat make_dir_as_owner.sh)"
# synapse-backup-mkdir PATH MODE MAKE_PARENTS`, as the directory's owner-to-be: makes the
# directory (and, with MAKE_PARENTS=1, its missing parents; an existing directory is then
# fine) with MODE. Running as the owner, no link that user can plant is followed by root.
set -euo pipefail
target=$1
mode=$2
make_parents=$3
parent=${target%/*}
[ -n "$parent" ] || parent=/
if [ "$make_parents" = 1 ]; then
  if [ -d "$target" ]; then exit 0; fi
  if [ -e "$target" ] || [ -L "$target" ]; then
    echo "exists: $target" >&2
    exit 3
  fi
  mkdir -p -- "$parent"
elif [ ! -d "$parent" ]; then
  echo "not-found: $parent" >&2
  exit 2
fi
mkdir -m "$mode" -- "$target"
