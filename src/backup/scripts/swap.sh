# shellcheck shell=bash
# swap.sh MODE: swaps staged paths into place (MODE `swap`, the default), or undoes a
# completed swap (MODE `rollback`).
#
# swap: for each member in $SB_WORK/swap.list (NUL-separated, relative to SB_ROOT) the
# live path, if any, is moved to $SB_WORK/aside/<member> and the staged one
# ($SB_WORK/stage/<member>) moved in; each member in drop.list is moved aside. Every
# move is logged (placed.log, aside.log) so it can be undone.
# Environment: SB_WORK, SB_ROOT.
# Exit codes: 0; 30 a move failed and everything done was undone; 31 the undo itself
# failed (the set-aside live files are left in $SB_WORK/aside).
set -euo pipefail
umask 077
w=$SB_WORK
root=$SB_ROOT
mkdir -p "$w/aside"
undo() {
  local ok=0 i placed=() aside=()
  [ -f "$w/placed.log" ] && mapfile -d '' -t placed <"$w/placed.log"
  [ -f "$w/aside.log" ] && mapfile -d '' -t aside <"$w/aside.log"
  for ((i = ${#placed[@]} - 1; i >= 0; i--)); do
    { mkdir -p "$w/stage/$(dirname -- "${placed[$i]}")" && mv -T -- "$root/${placed[$i]}" "$w/stage/${placed[$i]}"; } || ok=1
  done
  for ((i = ${#aside[@]} - 1; i >= 0; i--)); do
    mv -T -- "$w/aside/${aside[$i]}" "$root/${aside[$i]}" || ok=1
  done
  : >"$w/placed.log"
  : >"$w/aside.log"
  return "$ok"
}
if [ "${1:-swap}" = rollback ]; then
  undo || exit 31
  exit 0
fi
: >"$w/placed.log"
: >"$w/aside.log"
set_aside() {
  local m=$1
  if [ -e "$root/$m" ] || [ -L "$root/$m" ]; then
    mkdir -p "$w/aside/$(dirname -- "$m")" &&
      mv -T -- "$root/$m" "$w/aside/$m" &&
      printf '%s\0' "$m" >>"$w/aside.log"
  fi
}
fail() {
  echo "swap failed at $1" >&2
  undo || { echo "rollback failed: the live files set aside are in $w/aside" >&2; exit 31; }
  exit 30
}
while IFS= read -r -d '' m; do
  set_aside "$m" || fail "$m"
  { mkdir -p "$root/$(dirname -- "$m")" && mv -T -- "$w/stage/$m" "$root/$m" && printf '%s\0' "$m" >>"$w/placed.log"; } || fail "$m"
done <"$w/swap.list"
if [ -s "$w/drop.list" ]; then
  while IFS= read -r -d '' m; do
    set_aside "$m" || fail "$m"
  done <"$w/drop.list"
fi
