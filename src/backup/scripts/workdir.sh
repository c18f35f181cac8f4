# shellcheck shell=bash
# workdir.sh MODE ARGS: the work dir's life cycle, run as the workload user so that no
# privileged code ever touches a path that user can change.
#
#   make BASE PREFIX   makes a private dir `BASE/PREFIX.XXXXXXXXXX` (mktemp -d, mode
#                      0700) with an empty `gnupg` dir, writes stdin (the owner record)
#                      to its `owner` file and prints its path.
#   make-temp PREFIX   as make, in the workload's temp dir (${TMPDIR:-/tmp}): for a run
#                      that needs no space beside the data (verify), or where there is
#                      no data dir.
#   make-in DIR PREFIX as make, in DIR, which it first makes (`mkdir -p`) and which
#                      must be empty (exit 3 otherwise): an extraction's target.
#   write DIR NAME     writes stdin to the new file DIR/NAME (mode 0600); NAME has no `/`.
#   read FILE [OFFSET LENGTH]
#                      prints FILE, or LENGTH bytes of it from byte OFFSET (0-based).
#   size FILE          prints FILE's size in bytes.
#   list DIR PATTERN   prints `<type> <name>\0` (find's %y: f, d, l, ...) for each entry
#                      of DIR whose name matches the glob PATTERN; exit 4 when DIR does
#                      not exist, 5 when it is not a directory.
#   kind PATH          prints PATH's type letter (find's %y, a symlink not followed);
#                      exit 4 when it does not exist.
#   remove DIR         removes DIR and everything in it.
# Exit codes: 0; 3 (make-in) DIR is not empty; 4 (list, kind) no such path; anything
# else: the step failed (stderr says why).
set -euo pipefail
umask 077
make() {
  local d
  d=$(mktemp -d -p "$1" -- "$2.XXXXXXXXXX")
  mkdir -- "$d/gnupg"
  cat >"$d/owner"
  printf '%s\n' "$d"
}
case "$1" in
  make)
    make "$2" "$3"
    ;;
  make-temp)
    make "${TMPDIR:-/tmp}" "$2"
    ;;
  make-in)
    mkdir -p -- "$2"
    if [ -n "$(ls -A -- "$2")" ]; then
      echo "$2 is not empty" >&2
      exit 3
    fi
    make "$2" "$3"
    ;;
  write)
    case "$3" in */* | '' | . | ..) echo "bad work file name" >&2; exit 2 ;; esac
    set -o noclobber
    cat >"$2/$3"
    ;;
  read)
    if [ "$#" -eq 4 ]; then
      dd if="$2" iflag=skip_bytes,count_bytes skip="$3" count="$4" bs=1M status=none
    else
      cat -- "$2"
    fi
    ;;
  size)
    stat -c %s -- "$2"
    ;;
  list)
    # DIR may be a symlink to a dir (a volume mounted elsewhere): the trailing slash
    # follows it; its entries are not followed.
    if [ ! -e "$2" ]; then exit 4; fi
    if [ ! -d "$2" ]; then echo "$2 is not a directory" >&2; exit 5; fi
    find "${2%/}/" -mindepth 1 -maxdepth 1 -name "$3" -printf '%y %f\0'
    ;;
  kind)
    if [ ! -e "$2" ] && [ ! -L "$2" ]; then exit 4; fi
    find "$2" -maxdepth 0 -printf '%y'
    ;;
  remove)
    rm -rf -- "$2"
    ;;
  *)
    echo "unknown mode" >&2
    exit 2
    ;;
esac
