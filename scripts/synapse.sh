# shellcheck shell=bash
# Sourced by scripts/tools.sh (or run on its own): installs the Synapse releases that
# tests/synapse_e2e.rs runs, each into its own virtualenv, from PyPI:
# - $SYNAPSE_BACKUP_SYNAPSE/current: matrix-synapse $SYNAPSE_BACKUP_SYNAPSE_CURRENT (the
#   pinned release the end-to-end test backs up and restores, and the one an upgrade
#   restores into);
# - $SYNAPSE_BACKUP_SYNAPSE/previous: matrix-synapse $SYNAPSE_BACKUP_SYNAPSE_PREVIOUS (an
#   older release whose backup the current one must start on).
# Pillow comes with matrix-synapse (thumbnails need it). $SYNAPSE_BACKUP_SYNAPSE is
# /opt/synapse-backup-synapse when run as root (the virtualenvs are made from the system
# python3 with umask 022, so the test's own Synapse user can run them), else
# target/synapse-venvs. Quick when both are installed: only their versions are checked.
# `return` when sourced, `exit` when run: one of the two is always unreachable.
# shellcheck disable=SC2317
SYNAPSE_BACKUP_SYNAPSE_CURRENT=1.163.2
SYNAPSE_BACKUP_SYNAPSE_PREVIOUS=1.162.0
synapse_root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SYNAPSE_BACKUP_SYNAPSE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then SYNAPSE_BACKUP_SYNAPSE=/opt/synapse-backup-synapse; else SYNAPSE_BACKUP_SYNAPSE="$synapse_root_dir/target/synapse-venvs"; fi
fi
export SYNAPSE_BACKUP_SYNAPSE SYNAPSE_BACKUP_SYNAPSE_CURRENT SYNAPSE_BACKUP_SYNAPSE_PREVIOUS
synapse_python=python3
# A system python is readable by every user (pyenv's may sit under a private home).
[ -x /usr/bin/python3 ] && synapse_python=/usr/bin/python3
for synapse_slot in current:"$SYNAPSE_BACKUP_SYNAPSE_CURRENT" previous:"$SYNAPSE_BACKUP_SYNAPSE_PREVIOUS"; do
  synapse_venv="$SYNAPSE_BACKUP_SYNAPSE/${synapse_slot%%:*}"
  synapse_version="${synapse_slot#*:}"
  if "$synapse_venv/bin/python" - "$synapse_version" >/dev/null 2>&1 <<'EOF'; then
import sys
from importlib.metadata import version
import PIL, synapse
sys.exit(version("matrix-synapse") != sys.argv[1])
EOF
    continue
  fi
  echo "installing matrix-synapse $synapse_version into $synapse_venv" >&2
  rm -rf "$synapse_venv"
  if ! (umask 022 && mkdir -p "$SYNAPSE_BACKUP_SYNAPSE" && "$synapse_python" -m venv "$synapse_venv") >/dev/null 2>&1; then
    echo "python3 cannot create a virtualenv; install it with: sudo apt-get install -y python3-venv" >&2
    return 1 2>/dev/null || exit 1
  fi
  (umask 022 && "$synapse_venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$synapse_version") || {
    echo "could not install matrix-synapse $synapse_version from PyPI into $synapse_venv" >&2
    return 1 2>/dev/null || exit 1
  }
done
unset synapse_root_dir synapse_python synapse_slot synapse_venv synapse_version
