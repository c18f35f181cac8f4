# shellcheck shell=bash
# Sourced by scripts/bench: puts restic (the deduplicating backup tool an operator
# might pick instead, https://restic.net) on PATH for the bench's `restic` section,
# installing Debian's package when it is missing and this runs as root; otherwise the
# exact install command is printed and the bench's `restic` section reports it.
# `return` when sourced, `exit` when run: one of the two is always unreachable.
# shellcheck disable=SC2317
if ! command -v restic >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing restic (Debian package)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic >/dev/null; } ||
      echo "could not install restic; run: sudo apt-get install -y restic" >&2
  else
    echo "restic is missing; install it with: sudo apt-get install -y restic" >&2
  fi
fi
