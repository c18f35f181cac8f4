# shellcheck shell=bash
# prepare.sh: puts the inner manifest where tar archives it first, takes the SQLite
# snapshot (when SB_DB is set) keeping the live database's mode, then writes the total
# size (`size`) of what will be archived into the work dir.
#
# Environment: SB_WORK (work dir, holding `files`: the NUL-separated members relative
# to SB_ROOT, `links`: those of them that are symlinks to files,
# `inner-manifest.json` (absent for an incremental backup, whose inner manifest is
# written once its pack is planned, and moved into place by backup.sh) and, for an
# incremental backup, `media`: the NUL-separated media members to list), SB_ROOT, SB_PYTHON, SB_SQLITE3, and optionally
# SB_DB (the live database) with SB_DB_MEMBER (its member name) and
# SB_SNAPSHOT_TIMEOUT (seconds the snapshot may take).
# Output for an incremental backup: `tree`, its media files as NUL-terminated
# `SIZE MTIME MEMBER` records in the byte order of MEMBER (find's %s %T@ %p, then
# LC_ALL=C sort -z on the third field to the end).
# Exit codes: 0; 20 no snapshot tool; 21 the snapshot failed or timed out (stderr says
# which); 22 the snapshot fails SQLite's `PRAGMA integrity_check` (the live database is
# damaged; stderr has the check's first lines); 23 not enough free space for the
# snapshot (the free bytes in $SB_WORK/avail, the need in $SB_WORK/need); 24 a member
# that is a symlink does not lead to a regular file; 25 the snapshot fits but would
# leave less than the reserve free (`<available> <reserve>` in $SB_WORK/reserve; the
# reserve: the smaller of SB_RESERVE_BYTES and SB_RESERVE_PERCENT of the file system,
# when SB_RESERVE_BYTES is set: space.sh, which this file is appended to); anything
# else: a collection step failed (stderr says which). The codes are the table in
# src/backup/scripts.rs.
set -euo pipefail
umask 077
w=$SB_WORK
mkdir -p -- "$w/inner/.synapse-backup"
if [ -e "$w/inner-manifest.json" ]; then
  mv -- "$w/inner-manifest.json" "$w/inner/.synapse-backup/manifest.json"
fi
: >"$w/snapfiles"
if [ -n "${SB_DB:-}" ]; then
  # The snapshot is at most the database and its write-ahead log: check that much
  # (and an eighth more, the rule restore's staging has) is free where it is written,
  # so it never fills the data volume.
  db_bytes=0
  for f in "$SB_DB" "$SB_DB-wal"; do
    if [ -f "$f" ]; then db_bytes=$((db_bytes + $(stat -L -c %s -- "$f"))); fi
  done
  need=$((db_bytes + db_bytes / 8))
  space=$(df -B1 --output=size,avail -- "$w" | tail -n 1)
  read -r size avail <<<"$space"
  printf '%s\n' "$avail" >"$w/avail"
  printf '%s\n' "$need" >"$w/need"
  if [ "$avail" -lt "$need" ]; then
    echo "not enough free space in $w for the database snapshot: need $need bytes, $avail available" >&2
    exit 23
  fi
  # The reserve: the homeserver keeps writing beside the snapshot until the upload ends.
  if below_reserve "$avail" "$need" "$size" "$w for the database snapshot" "$w/reserve"; then
    exit 25
  fi
  limit=${SB_SNAPSHOT_TIMEOUT:-0}
  snap_st=0
  if "$SB_PYTHON" -c 'import sqlite3' >/dev/null 2>&1; then
    # --foreground: timeout stays in this process group, so a signal to the run's
    # group (Ctrl-C, a dropped run) reaches the snapshot too.
    timeout --foreground --kill-after=5 "$limit" "$SB_PYTHON" - "$SB_DB" "$w/snap.db" <<'PY' || snap_st=$?
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
dst = sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close()
src.close()
PY
  elif command -v "$SB_SQLITE3" >/dev/null 2>&1; then
    (cd "$w" && timeout --foreground --kill-after=5 "$limit" "$SB_SQLITE3" "$SB_DB" ".backup snap.db") || snap_st=$?
  else
    echo "cannot snapshot the SQLite database: neither $SB_PYTHON with its sqlite3 module nor $SB_SQLITE3 was found; install python3 or sqlite3 in the workload" >&2
    exit 20
  fi
  if [ "$snap_st" -eq 124 ] || [ "$snap_st" -eq 137 ]; then
    echo "the snapshot of $SB_DB did not finish within $limit s: the database stays locked by another process (raise the snapshot timeout if it is only busy)" >&2
    exit 21
  elif [ "$snap_st" -ne 0 ]; then
    exit 21
  fi
  # A database SQLite itself finds damaged is refused: restore would refuse it.
  if "$SB_PYTHON" -c 'import sqlite3' >/dev/null 2>&1; then
    "$SB_PYTHON" - "$w/snap.db" <<'PY' || exit 22
import sqlite3, sys
try:
    c = sqlite3.connect(sys.argv[1])
    rows = [r[0] for r in c.execute("PRAGMA integrity_check").fetchall()]
    c.close()
except sqlite3.Error as e:
    sys.stderr.write("integrity_check: %s\n" % e)
    sys.exit(1)
if rows != ["ok"]:
    sys.stderr.write("integrity_check: " + "; ".join(str(r) for r in rows[:5]) + "\n")
    sys.exit(1)
PY
  else
    out=$("$SB_SQLITE3" -batch "$w/snap.db" 'PRAGMA integrity_check;' 2>&1) || { echo "integrity_check: $out" >&2; exit 22; }
    if [ "$out" != ok ]; then echo "integrity_check: $out" >&2; exit 22; fi
  fi
  # The snapshot keeps the live database's mode (umask 077 made it 0600).
  chmod --reference="$SB_DB" -- "$w/snap.db"
  mkdir -p "$w/snap/$(dirname -- "$SB_DB_MEMBER")"
  mv -- "$w/snap.db" "$w/snap/$SB_DB_MEMBER"
  printf '%s\0' "$SB_DB_MEMBER" >>"$w/snapfiles"
fi
# Members that are symlinks to files (a signing key on a mounted secret) are copied,
# following the link, and archived from the copy under their own name.
if [ -s "$w/links" ]; then
  while IFS= read -r -d '' m; do
    if [ ! -f "$SB_ROOT/$m" ]; then
      echo "$m is a symbolic link to something that is not a readable regular file" >&2
      exit 24
    fi
    mkdir -p -- "$w/snap/$(dirname -- "$m")"
    cp -L --preserve=mode,timestamps -- "$SB_ROOT/$m" "$w/snap/$m"
    printf '%s\0' "$m" >>"$w/snapfiles"
  done <"$w/links"
fi
# An incremental backup's media listing: every regular file under the media members,
# relative to SB_ROOT, sorted by bytes (the order the index is compared in).
if [ -e "$w/media" ]; then
  while IFS= read -r -d '' m; do
    (cd "$SB_ROOT" && find "$m" -type f -printf '%s %T@ %p\0')
  done <"$w/media" | LC_ALL=C sort -z -t ' ' -k 3 >"$w/tree"
fi
total=0
if [ -s "$w/files" ]; then
  size=$(cd "$SB_ROOT" && du -bsc --files0-from="$w/files" 2>/dev/null | tail -n 1 | cut -f 1) || size=0
  total=$((total + ${size:-0}))
fi
if [ -s "$w/snapfiles" ]; then
  size=$(cd "$w/snap" && du -bsc --files0-from="$w/snapfiles" | tail -n 1 | cut -f 1)
  total=$((total + size))
fi
printf '%s\n' "$total" >"$w/size"
