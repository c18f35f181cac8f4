# shellcheck shell=bash
# workdir.sh MODE ARGS: the work dir's life cycle, run as the workload user so that no
# privileged code ever touches a path that user can change.
#
#   make BASE PREFIX   makes a private dir `BASE/PREFIX.XXXXXXXXXX` (mktemp -d, mode
#                      0700) with an empty `gnupg` dir, writes stdin (the owner record)
#                      to its `owner` file and prints its path.
#   write DIR NAME     writes stdin to the new file DIR/NAME (mode 0600); NAME has no `/`.
#   read FILE [OFFSET LENGTH]
#                      prints FILE, or LENGTH bytes of it from byte OFFSET (0-based).
#   size FILE          prints FILE's size in bytes.
#   remove DIR         removes DIR and everything in it.
# Exit codes: 0; anything else: the step failed (stderr says why).
set -euo pipefail
umask 077
case "$1" in
  make)
    d=$(mktemp -d -p "$2" -- "$3.XXXXXXXXXX")
    mkdir -- "$d/gnupg"
    cat >"$d/owner"
    printf '%s\n' "$d"
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
  remove)
    rm -rf -- "$2"
    ;;
  *)
    echo "unknown mode" >&2
    exit 2
    ;;
esac
