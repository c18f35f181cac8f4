# shellcheck shell=bash
# prepare.sh: takes the SQLite snapshot (when SB_DB is set), then writes the total size
# (`size`) and the file listing (`listing`: `<type> <size> <path>\0` records) into the
# work dir.
#
# Environment: SB_WORK (work dir, holding `files`: the NUL-separated members relative
# to SB_ROOT), SB_ROOT, SB_PYTHON, SB_SQLITE3, and optionally SB_DB (the live database)
# with SB_DB_MEMBER (its member name).
# Exit codes: 0; 20 no snapshot tool; 21 the snapshot failed; anything else: a
# collection step failed (stderr says which).
set -euo pipefail
umask 077
w=$SB_WORK
: >"$w/snapfiles"
if [ -n "${SB_DB:-}" ]; then
  if "$SB_PYTHON" -c 'import sqlite3' >/dev/null 2>&1; then
    if ! "$SB_PYTHON" - "$SB_DB" "$w/snap.db" <<'PY'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
dst = sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close()
src.close()
PY
    then exit 21; fi
  elif command -v "$SB_SQLITE3" >/dev/null 2>&1; then
    (cd "$w" && "$SB_SQLITE3" "$SB_DB" ".backup snap.db") || exit 21
  else
    echo "cannot snapshot the SQLite database: neither $SB_PYTHON with its sqlite3 module nor $SB_SQLITE3 was found; install python3 or sqlite3 in the workload" >&2
    exit 20
  fi
  mkdir -p "$w/snap/$(dirname -- "$SB_DB_MEMBER")"
  mv -- "$w/snap.db" "$w/snap/$SB_DB_MEMBER"
  printf '%s\0' "$SB_DB_MEMBER" >"$w/snapfiles"
fi
# find -files0-from needs findutils 4.9; older workloads (Ubuntu 22.04) lack it.
list_tree() {
  local p
  while IFS= read -r -d '' p; do
    (cd "$1" && find "./$p" -printf '%y %s %p\0') >>"$w/listing"
  done <"$2"
}
total=0
: >"$w/listing"
if [ -s "$w/files" ]; then
  size=$(cd "$SB_ROOT" && du -bsc --files0-from="$w/files" | tail -n 1 | cut -f 1)
  total=$((total + size))
  list_tree "$SB_ROOT" "$w/files"
fi
if [ -s "$w/snapfiles" ]; then
  size=$(cd "$w/snap" && du -bsc --files0-from="$w/snapfiles" | tail -n 1 | cut -f 1)
  total=$((total + size))
  list_tree "$w/snap" "$w/snapfiles"
fi
printf '%s\n' "$total" >"$w/size"
