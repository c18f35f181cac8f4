# shellcheck shell=bash
# Sourced by scripts/test and scripts/quickstart: puts the tools the pipeline and the
# tests use on PATH, installing what is missing without touching the system.
# - bash, tar, gpg, python3 (with sqlite3), coreutils: checked; the exact install
#   command is printed when one is missing.
# - the aws CLI and moto (an S3 server that implements multipart listing) go into a
#   virtualenv (Debian's system pip refuses global installs, and Debian's awscli is too
#   old): $SYNAPSE_BACKUP_TOOLS, by default target/tools-venv, or
#   /opt/synapse-backup-tools when run as root, so that tests that switch to the
#   `nobody` user can run the aws CLI too.
# `return` when sourced, `exit` when run: one of the two is always unreachable.
# shellcheck disable=SC2317
tools_missing=()
for tool in bash tar gpg python3 sha256sum mkfifo find du df; do
  command -v "$tool" >/dev/null 2>&1 || tools_missing+=("$tool")
done
if ((${#tools_missing[@]})); then
  echo "missing tools: ${tools_missing[*]}" >&2
  echo "install them with: sudo apt-get install -y bash tar gnupg python3 python3-venv coreutils findutils" >&2
  return 1 2>/dev/null || exit 1
fi
tools_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SYNAPSE_BACKUP_TOOLS:-}" ]; then
  if [ "$(id -u)" = 0 ]; then SYNAPSE_BACKUP_TOOLS=/opt/synapse-backup-tools; else SYNAPSE_BACKUP_TOOLS="$tools_root/target/tools-venv"; fi
fi
export SYNAPSE_BACKUP_TOOLS
if ! "$SYNAPSE_BACKUP_TOOLS/bin/aws" --version >/dev/null 2>&1 ||
  ! "$SYNAPSE_BACKUP_TOOLS/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1; then
  echo "installing the aws CLI and moto into $SYNAPSE_BACKUP_TOOLS" >&2
  tools_python=python3
  # A system python is readable by every user (pyenv's may sit under a private home).
  [ -x /usr/bin/python3 ] && tools_python=/usr/bin/python3
  rm -rf "$SYNAPSE_BACKUP_TOOLS"
  if ! (umask 022 && "$tools_python" -m venv "$SYNAPSE_BACKUP_TOOLS") >/dev/null 2>&1; then
    echo "python3 cannot create a virtualenv; install it with: sudo apt-get install -y python3-venv" >&2
    return 1 2>/dev/null || exit 1
  fi
  (umask 022 && "$SYNAPSE_BACKUP_TOOLS/bin/pip" install --quiet --disable-pip-version-check awscli 'moto[server]') || {
    echo "could not install the aws CLI and moto from PyPI" >&2
    return 1 2>/dev/null || exit 1
  }
fi
export PATH="$SYNAPSE_BACKUP_TOOLS/bin:$PATH"
# shellcheck source=scripts/pebble.sh
source "$tools_root/scripts/pebble.sh" || { return 1 2>/dev/null || exit 1; }
unset tools_missing tools_root tools_python
