# shellcheck shell=bash
# space.sh: the free-space rules, prepended to the scripts that check space before they
# write (prepare.sh, fetch.sh, swap.sh; see src/backup/scripts.rs) so that all three
# keep the same reserve and count space alike; nothing here runs on its own.
#
# The reserve keeps free space for the live homeserver, which goes on writing beside
# the snapshot and staging: the smaller of SB_RESERVE_BYTES bytes and SB_RESERVE_PERCENT
# percent of the file system, none without SB_RESERVE_BYTES (src/backup/reserve.rs).

# below_reserve AVAIL NEED SIZE WHERE FILE: whether writing NEED bytes would leave less
# than the reserve of a file system of SIZE bytes with AVAIL free. Sets `reserve` (0
# without one); when below it, writes `<available> <reserve>` to FILE and says so on
# stderr, naming WHERE (the path and what for).
below_reserve() {
  reserve=0
  if [ -z "${SB_RESERVE_BYTES:-}" ]; then return 1; fi
  reserve=$(($3 * SB_RESERVE_PERCENT / 100))
  if [ "$reserve" -gt "$SB_RESERVE_BYTES" ]; then reserve=$SB_RESERVE_BYTES; fi
  if [ "$1" -ge $(($2 + reserve)) ]; then return 1; fi
  printf '%s %s\n' "$1" "$reserve" >"$5"
  echo "not enough free space in $4: need $2 bytes and $reserve kept free, $1 available" >&2
}

# on_disk PATH: prints what PATH's tree takes on disk wherever it is copied, at the
# least as ext4 allocates it (EntryKind::on_disk's rule, src/backup/manifest.rs): each
# file in whole 4 KiB blocks, each directory one block, links nothing. Its bytes
# (`du -b`) count a media store of small files at a fraction of that, and what `du`
# finds on disk depends on the file system it is on (tmpfs's dirs take none).
# (awk's numbers are doubles, exact to 2^53; %.0f, as some awks' %d stops at 2^31.)
on_disk() {
  find -P "$1" \( -type f -printf '%s\n' \) -o \( -type d -printf 'd\n' \) |
    awk '$0 == "d" { n += 4096; next } { n += int(($1 + 4095) / 4096) * 4096 }
      END { printf "%.0f\n", n }'
}
