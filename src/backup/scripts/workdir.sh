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
#                      must be empty (exit 51 otherwise): an extraction's target.
#   target DIR         checks an extraction's target DIR (absolute): every existing
#                      component owned by root or this user and not writable by others
#                      (sticky ancestors, as /tmp, excepted; never DIR itself); exit 54
#                      (stderr says which) otherwise. Makes what is missing (0700) and
#                      prints the topmost dir it made (an empty line: none).
#   unmake DIR TOP     removes DIR and its parents up to TOP while they are empty.
#   write DIR NAME     writes stdin to the new file DIR/NAME (mode 0600); NAME has no `/`.
#   append DIR NAME    appends stdin to DIR/NAME, which `write` made: exit 52 when it is
#                      not a regular file (missing, or a symlink); NAME has no `/`.
#   read FILE [OFFSET LENGTH]
#                      prints FILE, or LENGTH bytes of it from byte OFFSET (0-based);
#                      exit 52 when FILE does not exist.
#   size FILE          prints FILE's size in bytes; exit 52 when FILE does not exist.
#   list DIR PATTERN   prints `<type> <name>\0` (find's %y: f, d, l, ...) for each entry
#                      of DIR whose name matches the glob PATTERN; exit 52 when DIR does
#                      not exist, 53 when it is not a directory.
#   kind PATH          prints PATH's type letter (find's %y, a symlink not followed);
#                      exit 52 when it does not exist.
#   remove DIR         removes DIR and everything in it (read-only dirs in it too).
#   sweep DIR          a dead restore's work dir: prints `kept` after removing all but
#                      `aside/`, `aside.log`, `placed.log`, `swap.list` and `owner` when
#                      its swap had begun, else removes it and prints `removed`.
# Exit codes: 0; 50 an unknown mode or a bad work file name; 51 (make-in) DIR is not
# empty; 52 (list, kind, read, size, append) no such path; 53 (list) not a directory; 54
# (target) the target is refused; anything else: the step failed (stderr says why).
# The codes are the table in src/backup/scripts.rs.
set -euo pipefail
umask 077
# Makes every dir under the given paths writable and searchable by its owner
# (pre-order, one at a time, so find can then descend into it): an archive may hold
# read-only dirs.
make_dirs_writable() {
  find "$@" -type d ! -perm -u=rwx -exec chmod u+rwx -- {} \;
}
# Removes the given paths, read-only dirs in them too: rm alone first, and only when
# it cannot remove everything the walk of make_dirs_writable, then rm again (on a
# media store of 1,000,000 files each walk took seconds).
remove_all() {
  if ! rm -rf -- "$@" 2>/dev/null; then
    make_dirs_writable "$@"
    rm -rf -- "$@"
  fi
}
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
      exit 51
    fi
    make "$2" "$3"
    ;;
  target)
    # An extraction's target: every existing component of DIR must be owned by root or
    # the user running this, and none writable by others (unless sticky, as /tmp; the
    # target itself never), so nobody else can read what is placed there or swap a
    # component. The missing part is then made (mode 0700) and its top printed.
    me=$(id -u)
    d=$2
    top=""
    while [ ! -e "$d" ] && [ ! -L "$d" ]; do
      top=$d
      d=$(dirname -- "$d")
    done
    check=$d
    while :; do
      if [ -L "$check" ]; then echo "$check is a symbolic link" >&2; exit 54; fi
      read -r owner mode < <(stat -c '%u %a' -- "$check")
      if [ "$owner" != 0 ] && [ "$owner" != "$me" ]; then
        echo "$check is owned by uid $owner, neither root nor the workload user" >&2
        exit 54
      fi
      if [ $((8#$mode & 8#022)) -ne 0 ]; then
        if [ "$check" = "$2" ] || [ $((8#$mode & 8#1000)) -eq 0 ]; then
          echo "$check is writable by other users (mode $mode)" >&2
          exit 54
        fi
      fi
      if [ "$check" = / ]; then break; fi
      check=$(dirname -- "$check")
    done
    if [ -e "$d" ] && [ ! -d "$d" ]; then echo "$d is not a directory" >&2; exit 54; fi
    mkdir -p -- "$2"
    printf '%s\n' "$top"
    ;;
  unmake)
    # Removes the empty dirs `target` made: DIR and its parents up to TOP.
    d=$2
    while rmdir -- "$d" 2>/dev/null; do
      if [ "$d" = "$3" ]; then break; fi
      d=$(dirname -- "$d")
    done
    ;;
  write)
    case "$3" in */* | '' | . | ..) echo "bad work file name" >&2; exit 50 ;; esac
    set -o noclobber
    cat >"$2/$3"
    ;;
  append)
    case "$3" in */* | '' | . | ..) echo "bad work file name" >&2; exit 50 ;; esac
    if [ -L "$2/$3" ] || [ ! -f "$2/$3" ]; then
      echo "$2/$3 is not a regular file" >&2
      exit 52
    fi
    cat >>"$2/$3"
    ;;
  read)
    if [ ! -e "$2" ]; then echo "$2 does not exist" >&2; exit 52; fi
    if [ "$#" -eq 4 ]; then
      dd if="$2" iflag=skip_bytes,count_bytes skip="$3" count="$4" bs=1M status=none
    else
      cat -- "$2"
    fi
    ;;
  size)
    if [ ! -e "$2" ]; then echo "$2 does not exist" >&2; exit 52; fi
    stat -c %s -- "$2"
    ;;
  list)
    # DIR may be a symlink to a dir (a volume mounted elsewhere): the trailing slash
    # follows it; its entries are not followed.
    if [ ! -e "$2" ]; then exit 52; fi
    if [ ! -d "$2" ]; then echo "$2 is not a directory" >&2; exit 53; fi
    find "${2%/}/" -mindepth 1 -maxdepth 1 -name "$3" -printf '%y %f\0'
    ;;
  kind)
    if [ ! -e "$2" ] && [ ! -L "$2" ]; then exit 52; fi
    find "$2" -maxdepth 0 -printf '%y'
    ;;
  remove)
    remove_all "$2"
    ;;
  sweep)
    # A dead restore's dir: when its swap had begun (something set aside or placed),
    # only what the swap log and the set-aside live files need is kept (`kept`);
    # else all of it goes (`removed`). Keys, the aws config and staging never stay.
    # Only what goes is made writable: the set-aside live dirs keep their modes (a
    # roll-back puts them back as they were).
    if [ -s "$2/aside.log" ] || [ -s "$2/placed.log" ] || [ -n "$(ls -A -- "$2/aside" 2>/dev/null)" ]; then
      mapfile -d '' -t gone < <(find "$2" -mindepth 1 -maxdepth 1 ! -name aside \
        ! -name aside.log ! -name placed.log ! -name owner ! -name swap.list -print0)
      if [ "${#gone[@]}" -gt 0 ]; then remove_all "${gone[@]}"; fi
      echo kept
    else
      remove_all "$2"
      echo removed
    fi
    ;;
  *)
    echo "unknown mode" >&2
    exit 50
    ;;
esac
