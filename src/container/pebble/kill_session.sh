# shellcheck shell=bash
# Run by PebbleContainer as `bash -c "$(cat kill_session.sh)" synapse-backup-kill SID
# [HOME]`, as root, when an exec timed out or its future was dropped: Pebble signals
# only the direct child, so this sends SIGKILL to every process whose session id is SID
# (from /proc/PID/stat), round after round until none is left alive, then removes the
# private HOME the exec wrapper made (only a path of that shape).
sid=$1
home=${2:-}
for ((round = 0; round < 500; round++)); do
  found=0
  for stat in /proc/[0-9]*/stat; do
    line=
    read -r line 2>/dev/null <"$stat" || continue
    rest=${line##*) }
    read -r -a fields <<<"$rest"
    # fields: state ppid pgrp session …
    if [ "${fields[3]:-}" = "$sid" ] && [ "${fields[0]:-}" != Z ]; then
      pid=${stat#/proc/}
      kill -KILL "${pid%/stat}" 2>/dev/null && found=1
    fi
  done
  [ "$found" = 0 ] && break
  sleep 0.01
done
case "$home" in
/tmp/synapse-backup-home.*) rm -rf -- "$home" ;;
esac
