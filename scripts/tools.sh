# Sourced by scripts/test and scripts/quickstart: puts the tools the pipeline and the
# tests use on PATH, installing what is missing without touching the system.
# - bash, tar, gpg, python3 (with sqlite3): checked; the exact install command is printed.
# - the aws CLI and moto (test S3 server with multipart listing): a virtualenv under
#   target/tools-venv when not already on PATH (Debian's system pip refuses global
#   installs, and Debian's awscli is too old).
tools_missing=()
for tool in bash tar gpg python3 sha256sum mkfifo; do
  command -v "$tool" >/dev/null 2>&1 || tools_missing+=("$tool")
done
if ((${#tools_missing[@]})); then
  echo "missing tools: ${tools_missing[*]}" >&2
  echo "install them with: sudo apt-get install -y bash tar gnupg python3 coreutils" >&2
  return 1 2>/dev/null || exit 1
fi
tools_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_venv="$tools_root/target/tools-venv"
tools_need_venv=0
command -v aws >/dev/null 2>&1 || tools_need_venv=1
if [ "${SYNAPSE_BACKUP_NEED_MOTO:-0}" = 1 ]; then
  python3 -c 'import moto.server, flask' >/dev/null 2>&1 || tools_need_venv=1
fi
if [ "$tools_need_venv" = 1 ] || [ -x "$tools_venv/bin/aws" ]; then
  if [ ! -x "$tools_venv/bin/aws" ] || ! "$tools_venv/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1; then
    echo "installing the aws CLI and moto into $tools_venv" >&2
    if ! python3 -m venv "$tools_venv" >/dev/null 2>&1; then
      echo "python3 cannot create a virtualenv; install it with: sudo apt-get install -y python3-venv" >&2
      return 1 2>/dev/null || exit 1
    fi
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check awscli 'moto[server]'
  fi
  export PATH="$tools_venv/bin:$PATH"
fi
unset tools_missing tools_need_venv
