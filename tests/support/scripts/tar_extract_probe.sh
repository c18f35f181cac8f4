#!/bin/bash
# A tar for tests (a layout's `tar`): runs the real tar (the first `tar` on PATH) with
# the same arguments; after an extraction into a directory (`--extract` with
# `--directory DIR`), writes probe.PID.log beside this script (one per run: runs go
# side by side): a line `extracted DIR`, then the files DIR holds (relative, one per
# line, sorted), before anything else can move them. Exits with tar's status.
set -uo pipefail
extract="" dir="" prev=""
for a in "$@"; do
  case $a in --extract) extract=1 ;; esac
  if [ "$prev" = --directory ]; then dir=$a; fi
  prev=$a
done
tar "$@"
st=$?
if [ -n "$extract" ] && [ -n "$dir" ]; then
  log="$(dirname -- "$0")/probe.$$.log"
  {
    printf 'extracted %s\n' "$dir"
    find "$dir" -type f -printf '%P\n' | sort
  } >"$log"
fi
exit "$st"
