# shellcheck shell=bash
# watchdog.sh: prepended to the long-running scripts (prepare.sh, backup.sh, fetch.sh;
# see src/backup/scripts.rs) so that their pipeline never outlives the run that
# started it.
#
# The script runs in a process group of its own (LocalContainer starts it as a group
# leader; elsewhere, e.g. under Pebble, it re-executes itself through `setsid` when
# that is installed). A background watchdog then kills the whole group as soon as the
# script's shell is gone (Pebble SIGKILLs only its direct child when the client drops)
# or has lost the parent that started it (the caller was killed: the shell was
# reparented). The shell's own exit ends the watchdog (an EXIT trap: the including
# script sets none). Nothing here reads or
# writes the positional parameters; the including script sees them unchanged.
# Environment: SB_SUPERVISED (set here: the re-executed shell does not re-execute).
#
# First, the priority the caller asked for (src/backup/priority.rs): the script
# re-executes itself once (same process, so same group) under `nice -n SB_NICE` and
# `ionice SB_IONICE` (e.g. `-c 2 -n 7`), each only when set and its tool installed
# (`ionice` is util-linux's: without it only the CPU priority changes). Everything the
# script starts inherits both. Environment: SB_NICE, SB_IONICE, SB_PRIORITISED (set here).
set -euo pipefail
if [ -z "${SB_PRIORITISED:-}" ] && [ -n "${SB_NICE:-}${SB_IONICE:-}" ]; then
  export SB_PRIORITISED=1
  sb_wrap=()
  if [ -n "${SB_IONICE:-}" ] && command -v ionice >/dev/null 2>&1; then
    # Two or four words, made by this crate: split on purpose.
    # shellcheck disable=SC2206
    sb_wrap+=(ionice -t $SB_IONICE)
  fi
  if [ -n "${SB_NICE:-}" ] && command -v nice >/dev/null 2>&1; then
    sb_wrap+=(nice -n "$SB_NICE")
  fi
  if [ "${#sb_wrap[@]}" -gt 0 ]; then
    exec "${sb_wrap[@]}" "$BASH" -c "$BASH_EXECUTION_STRING" "$0" "$@"
  fi
fi
read -r _ _ _ _ sb_pgid _ </proc/$$/stat
if [ "$sb_pgid" != "$$" ] && [ -z "${SB_SUPERVISED:-}" ] && command -v setsid >/dev/null 2>&1; then
  export SB_SUPERVISED=1
  exec setsid "$BASH" -c "$BASH_EXECUTION_STRING" "$0" "$@"
fi
if [ "$sb_pgid" = "$$" ]; then
  sb_leader=$$
  read -r _ _ _ sb_parent _ </proc/$$/stat
  (
    # Out of the work dir (which may be a mount point a caller unmounts) and off the
    # caller's pipes.
    cd /
    exec </dev/null >/dev/null 2>&1 3>&- 4>&-
    while sleep 1; do
      sb_state=""
      sb_ppid=""
      read -r _ _ sb_state sb_ppid _ 2>/dev/null </proc/"$sb_leader"/stat || break
      if [ "$sb_state" = Z ] || [ "$sb_ppid" != "$sb_parent" ]; then break; fi
    done
    kill -KILL -- "-$sb_leader" 2>/dev/null || true
  ) &
  sb_watchdog=$!
  # The shell's own end (any exit status) ends the watchdog at once.
  trap 'kill -TERM "$sb_watchdog" 2>/dev/null || true' EXIT
fi
