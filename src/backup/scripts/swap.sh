# shellcheck shell=bash
# swap.sh MODE: the restore's steps that touch staged or live files, all run as the
# workload user.
#
# swap (the default): for each member in $SB_WORK/swap.list (NUL-separated, relative to
# SB_ROOT) the live path, if any, is moved to $SB_WORK/aside/<member> and the staged one
# ($SB_WORK/stage/<member>) moved in; with SB_DB_MEMBER, every live SQLite sidecar of
# it (`$SB_DB_MEMBER-wal`, `-shm`, `-journal`, `-mj…`) is moved aside too and its member
# name printed, NUL-terminated. Every move is logged (placed.log, aside.log) so it can be
# undone.
# rollback: undoes a completed swap.
# check-db: checks the staged database $SB_STAGED_DB (PRAGMA integrity_check), empties
# its e2e_one_time_keys_json table unless SB_KEEP_OTK=1, checkpoints it so that it is
# one self-contained file, and prints `otk <rows removed>` (-1: no such table or kept).
# place: an extraction: moves each member in $SB_WORK/place.list (NUL-separated) from
# $SB_WORK/stage/<member> to $SB_TARGET/<member>, making its parent dirs; nothing live
# is touched, and an existing destination is an error (the target was empty).
# preflight: checks, before anything is stopped or moved, what the swap of the units in
# $SB_WORK/swap.sizes (NUL-separated `member`, `bytes on disk` pairs) needs: the
# workload user may write where each is set aside and placed (a live dir moved aside
# must itself be writable), and there is room where a move crosses file systems (it
# is a copy): in SB_STAGE_BASE for SB_PREFLIGHT_STAGING bytes plus the live files set
# aside from another file system, and on that file system for the files placed there.
# Environment: SB_WORK, SB_ROOT; SB_DB_MEMBER for swap; SB_STAGE_BASE,
# SB_PREFLIGHT_STAGING and optionally SB_RESERVE_BYTES with SB_RESERVE_PERCENT (the
# free-space reserve staging keeps: space.sh's rule, which this file is appended to)
# for preflight; SB_STAGED_DB, SB_KEEP_OTK, SB_PYTHON, SB_SQLITE3 for
# check-db; SB_TARGET for place.
# Exit codes: 0; 30 a move failed and everything done was undone; 31 the undo itself
# failed (the set-aside live files are left in $SB_WORK/aside); 32 the staged database
# failed its check (stderr says how); 33 no tool to check it with; 34 (preflight) a
# path the swap must change is not writable (stderr names it); 35 (preflight) not
# enough space (`<need> <available> <path>` in $SB_WORK/preflight); 36 (place) a
# destination exists (stderr names it); 37 (preflight) the staging fits but would leave
# less than the reserve free (`<available> <reserve>` in $SB_WORK/reserve, the need in
# $SB_WORK/need). The codes are the table in src/backup/scripts.rs.
set -euo pipefail
umask 077
w=$SB_WORK
root=$SB_ROOT
# move FROM TO: moves FROM to TO, making TO's parent dirs. A rename where both are on
# one file system; across file systems (a media store on a volume of its own) a copy,
# then the removal of FROM, each undone when it fails: a copy cut short (a full disk)
# is removed, leaving FROM whole, and a removal cut short is made whole again from the
# copy, which is then removed. (mv's own copy leaves what it cut short at TO, where the
# undo then finds live files still set aside.) Fails with nothing moved, or, when the
# undo of a failed copy fails too, with what is left of it at TO.
move() {
  mkdir -p -- "$(dirname -- "$2")" || return 1
  # -L: the dirs the entries are in, through a symlink such as media_store.
  local from to
  from=$(stat -L -c %d -- "$(dirname -- "$1")" || true)
  to=$(stat -L -c %d -- "$(dirname -- "$2")" || true)
  if [ -n "$from" ] && [ "$from" = "$to" ]; then
    mv -T -- "$1" "$2"
    return
  fi
  # What a failed copy leaves at TO is removed: only ever what this copy made.
  if [ -e "$2" ] || [ -L "$2" ]; then
    echo "cannot move $1 to $2: it exists" >&2
    return 1
  fi
  if ! cp -a -T -- "$1" "$2"; then
    rm -rf -- "$2"
    return 1
  fi
  if ! rm -rf -- "$1"; then
    cp -a -T -- "$2" "$1" && rm -rf -- "$2"
    return 1
  fi
}
case "${1:-swap}" in
  place)
    while IFS= read -r -d '' m; do
      dest="$SB_TARGET/$m"
      if [ -e "$dest" ] || [ -L "$dest" ]; then
        echo "cannot place $m: $dest exists" >&2
        exit 36
      fi
      move "$w/stage/$m" "$dest"
    done <"$w/place.list"
    exit 0
    ;;
  preflight)
    # What the swap needs, checked before anything is stopped or moved: write access
    # where each unit is moved aside and placed, and space wherever a move crosses file
    # systems (a media store on another volume: setting aside and placing are copies).
    sdev=$(stat -L -c %d -- "$SB_STAGE_BASE")
    aside=0
    declare -A incoming=() freed=() where=()
    while IFS= read -r -d '' m && IFS= read -r -d '' size; do
      p=$root/$m
      probe=$(dirname -- "$p")
      while [ ! -e "$probe" ]; do probe=$(dirname -- "$probe"); done
      if [ ! -w "$probe" ] || [ ! -x "$probe" ]; then
        echo "cannot replace $m: $probe is not writable by the workload user" >&2
        exit 34
      fi
      if [ -d "$p" ] && [ ! -L "$p" ] && [ ! -w "$p" ]; then
        echo "cannot replace $m: the directory $p is not writable by the workload user, so it cannot be moved aside" >&2
        exit 34
      fi
      ldev=$(stat -L -c %d -- "$probe")
      if [ "$ldev" != "$sdev" ]; then
        old=0
        # What it takes on disk where it is copied (space.sh), not its bytes.
        if [ -e "$p" ]; then old=$(on_disk "$p"); fi
        aside=$((aside + old))
        freed[$ldev]=$((${freed[$ldev]:-0} + old))
        incoming[$ldev]=$((${incoming[$ldev]:-0} + size))
        where[$ldev]=$probe
      fi
    done <"$w/swap.sizes"
    need=$((${SB_PREFLIGHT_STAGING:-0} + aside + aside / 8))
    space=$(df -B1 --output=size,avail -- "$SB_STAGE_BASE" | tail -n 1)
    read -r size avail <<<"$space"
    if [ "$avail" -lt "$need" ]; then
      printf '%s %s %s\n' "$need" "$avail" "$SB_STAGE_BASE" >"$w/preflight"
      echo "not enough free space in $SB_STAGE_BASE for staging and for the live files set aside from another file system: need $need bytes, $avail available" >&2
      exit 35
    fi
    # The restore's staging keeps the reserve free (fetch.sh): a verify that passes
    # here is a restore whose own space check passes.
    if below_reserve "$avail" "$need" "$size" "$SB_STAGE_BASE for staging" \
      "$w/reserve"; then
      printf '%s\n' "$need" >"$w/need"
      exit 37
    fi
    for dev in "${!incoming[@]}"; do
      in=${incoming[$dev]}
      need=$((in + in / 8))
      avail=$(df -B1 --output=avail -- "${where[$dev]}" | tail -n 1 | tr -d ' ')
      if [ $((avail + ${freed[$dev]})) -lt "$need" ]; then
        printf '%s %s %s\n' "$need" "$((avail + ${freed[$dev]}))" "${where[$dev]}" >"$w/preflight"
        echo "not enough free space in ${where[$dev]} (another file system) for the restored files: need $need bytes, $((avail + ${freed[$dev]})) available once the live ones are set aside" >&2
        exit 35
      fi
    done
    exit 0
    ;;
  check-db)
    db=$SB_STAGED_DB
    if "$SB_PYTHON" -c 'import sqlite3' >/dev/null 2>&1; then
      "$SB_PYTHON" - "$db" "${SB_KEEP_OTK:-0}" <<'PY' || exit 32
import sqlite3, sys
path, keep = sys.argv[1], sys.argv[2] == "1"
try:
    c = sqlite3.connect(path, isolation_level=None)
    rows = [r[0] for r in c.execute("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        sys.stderr.write("integrity_check: " + "; ".join(str(r) for r in rows[:5]) + "\n")
        sys.exit(1)
    removed = -1
    has = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'e2e_one_time_keys_json'").fetchone()
    if has and not keep:
        removed = c.execute("DELETE FROM e2e_one_time_keys_json").rowcount
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    c.close()
except sqlite3.Error as e:
    sys.stderr.write("%s\n" % e)
    sys.exit(1)
print("otk %d" % removed)
PY
    elif command -v "$SB_SQLITE3" >/dev/null 2>&1; then
      out=$("$SB_SQLITE3" -batch "$db" 'PRAGMA integrity_check;') || { echo "$out" >&2; exit 32; }
      if [ "$out" != ok ]; then echo "integrity_check: $out" >&2; exit 32; fi
      removed=-1
      if [ "${SB_KEEP_OTK:-0}" != 1 ] && [ -n "$("$SB_SQLITE3" -batch "$db" "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'e2e_one_time_keys_json';")" ]; then
        removed=$("$SB_SQLITE3" -batch "$db" 'DELETE FROM e2e_one_time_keys_json; SELECT changes();') || exit 32
      fi
      "$SB_SQLITE3" -batch "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null || exit 32
      printf 'otk %s\n' "$removed"
    else
      echo "cannot check the restored SQLite database: neither $SB_PYTHON with its sqlite3 module nor $SB_SQLITE3 was found; install python3 or sqlite3 in the workload" >&2
      exit 33
    fi
    if [ -s "$db-wal" ]; then
      echo "the staged database still has a write-ahead log after a checkpoint" >&2
      exit 32
    fi
    rm -f -- "$db-wal" "$db-shm" "$db-journal"
    exit 0
    ;;
esac
mkdir -p "$w/aside"
# Each move is logged once made, so the undo moves back exactly what the logs list; a
# move whose log line cannot be written (a full disk) is reverted on the spot before
# the swap fails. When the undo is done, no file may be left set aside; when it fails,
# the logs stay for the person who must finish it.
# cut_short LOG: whether LOG's last record lacks its NUL: an append cut short (a full
# disk), whose move move_logged reverted, so it is not a record.
cut_short() {
  [ -s "$1" ] && [ -n "$(tail -c 1 -- "$1" | tr -d '\0')" ]
}
undo() {
  local ok=0 i placed=() aside=()
  [ -f "$w/placed.log" ] && mapfile -d '' -t placed <"$w/placed.log"
  [ -f "$w/aside.log" ] && mapfile -d '' -t aside <"$w/aside.log"
  if cut_short "$w/placed.log"; then unset 'placed[-1]'; fi
  if cut_short "$w/aside.log"; then unset 'aside[-1]'; fi
  for ((i = ${#placed[@]} - 1; i >= 0; i--)); do
    move "$root/${placed[$i]}" "$w/stage/${placed[$i]}" || ok=1
  done
  for ((i = ${#aside[@]} - 1; i >= 0; i--)); do
    move "$w/aside/${aside[$i]}" "$root/${aside[$i]}" || ok=1
  done
  if [ -n "$(find "$w/aside" -mindepth 1 ! -type d -print -quit 2>/dev/null)" ]; then
    echo "live files are still set aside after the undo" >&2
    ok=1
  fi
  if [ "$ok" -eq 0 ]; then
    : >"$w/placed.log"
    : >"$w/aside.log"
  fi
  return "$ok"
}
if [ "${1:-swap}" = rollback ]; then
  undo || exit 31
  exit 0
fi
: >"$w/placed.log"
: >"$w/aside.log"
# move_logged FROM TO LOG MEMBER: moves FROM to TO (move) and logs MEMBER in LOG; the
# move is reverted when the log line cannot be written.
move_logged() {
  move "$1" "$2" || return 1
  if ! printf '%s\0' "$4" >>"$3"; then
    move "$2" "$1"
    return 1
  fi
}
set_aside() {
  local m=$1
  if [ -e "$root/$m" ] || [ -L "$root/$m" ]; then
    move_logged "$root/$m" "$w/aside/$m" "$w/aside.log" "$m"
  fi
}
fail() {
  echo "swap failed at $1" >&2
  undo || { echo "rollback failed: the live files set aside are in $w/aside" >&2; exit 31; }
  exit 30
}
while IFS= read -r -d '' m; do
  set_aside "$m" || fail "$m"
  move_logged "$w/stage/$m" "$root/$m" "$w/placed.log" "$m" || fail "$m"
done <"$w/swap.list"
if [ -n "${SB_DB_MEMBER:-}" ]; then
  shopt -s nullglob
  for p in "$root/$SB_DB_MEMBER"-*; do
    m=${p#"$root/"}
    # Only SQLite's own sidecars (see layout.rs is_sqlite_sidecar_suffix): a user's
    # `homeserver.db-before-upgrade` is a file of its own, restored or left alone.
    case ${m#"$SB_DB_MEMBER"} in
      -wal | -shm | -journal) ;;
      -mj*[!A-Za-z0-9]* | -mj) continue ;;
      -mj*) ;;
      *) continue ;;
    esac
    set_aside "$m" || fail "$m"
    printf '%s\0' "$m"
  done
fi
