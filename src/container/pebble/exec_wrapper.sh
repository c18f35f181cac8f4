# shellcheck shell=bash
# Run by PebbleContainer::exec as `bash -c "$(cat exec_wrapper.sh)" synapse-backup-exec
# NAME… -- DIR PROGRAM ARG…`, as the user the command runs as. Pebble starts it as the
# leader of a new session, with Pebble's own environment merged into the one asked for.
# It keeps only PATH, LANG and the variables NAME…, gives the command a private HOME
# (unless HOME is one of the NAMEs) that it removes afterwards, changes to DIR, checks
# that PROGRAM can be found, prints `synapse-backup-exec PID HOME` on standard output
# (PID is the session id, for a kill of the whole session), then runs the command and
# exits with its status (128 + N when a signal N killed it).
# Exit 126/127 without that first line: the command could not be started.
keep=" PATH LANG "
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
  keep+="$1 "
  shift
done
shift
dir=$1
shift
while IFS= read -r name; do
  case "$keep" in
  *" $name "*) ;;
  *) unset "$name" 2>/dev/null ;;
  esac
done < <(compgen -e)
# Names bash cannot hold (e.g. with a '-') are not in compgen's list: env drops them.
drop=()
if [ -r "/proc/$$/environ" ]; then
  while IFS= read -r -d '' entry; do
    name=${entry%%=*}
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || drop+=(-u "$name")
  done <"/proc/$$/environ"
fi
home_made=
case "$keep" in
*" HOME "*) ;;
*)
  if ! HOME=$(umask 077 && mktemp -d /tmp/synapse-backup-home.XXXXXXXXXX); then
    echo "could not create a private HOME in /tmp" >&2
    exit 126
  fi
  home_made=$HOME
  export HOME
  ;;
esac
cleanup() { [ -z "$home_made" ] || rm -rf -- "$home_made"; }
if ! cd -- "$dir"; then
  cleanup
  exit 126
fi
program=$1
if [[ $program == */* ]]; then
  if [[ ! -f $program || ! -x $program ]]; then
    echo "$program: no such executable file" >&2
    cleanup
    exit 127
  fi
elif ! type -P -- "$program" >/dev/null; then
  echo "$program: not found on PATH" >&2
  cleanup
  exit 127
fi
unset PWD OLDPWD SHLVL keep dir program name entry
printf 'synapse-backup-exec %s %s\n' "$$" "$home_made"
status=0
# env drops the `_` variable that bash adds to a child's environment.
env -u _ "${drop[@]}" -- "$@" || status=$?
cleanup
exit "$status"
