# shellcheck shell=sh
# reserve.sh: the free-space reserve's check while tar extracts into staging. fetch.sh
# passes this text to tar as `--checkpoint-action=exec=<text>`, so GNU tar runs it with
# `/bin/sh -c` every SB_RESERVE_RECORDS records it has read (tar is its parent, and
# waits for it): once the file system of SB_RESERVE_DIR has less than
# SB_RESERVE_BYTES available to its user, it writes `<available> <reserve>` to
# SB_RESERVE_FILE and stops tar (SIGTERM), so staging never takes the space the live
# homeserver beside it keeps writing into. The pipeline upstream of tar then stops on
# its broken pipe, and fetch.sh exits 42.
# A failed `stat` checks nothing (tar goes on; the space check before staging stands).
# POSIX sh: /bin/sh may be dash. No tar `%` expansion applies to an exec action.
free=$(stat -f -c '%a %S' -- "$SB_RESERVE_DIR" 2>/dev/null) || exit 0
avail=$(( ${free% *} * ${free#* } ))
if [ "$avail" -lt "$SB_RESERVE_BYTES" ]; then
  printf '%s %s\n' "$avail" "$SB_RESERVE_BYTES" >"$SB_RESERVE_FILE"
  kill -TERM "$PPID"
fi
