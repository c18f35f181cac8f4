#!/bin/bash
# A tar for tests (a layout's `tar`): before an extraction into a directory
# (`--extract` with `--directory DIR`), appends to probe.log beside this script how
# many directories named local_content/f*/g* the shared stage ($SB_STAGE when set,
# else DIR) holds, then runs the real tar (the first `tar` on PATH) with the same
# arguments.
set -euo pipefail
extract="" dir=""
prev=""
for a in "$@"; do
  case $a in --extract) extract=1 ;; esac
  if [ "$prev" = --directory ]; then dir=$a; fi
  prev=$a
done
if [ -n "$extract" ] && [ -n "$dir" ]; then
  stage=${SB_STAGE:-$dir}
  n=0
  if [ -d "$stage" ]; then
    n=$(find "$stage" -path '*/local_content/f*/g*' -type d | wc -l)
  fi
  printf 'extract %s\n' "$n" >>"$(dirname -- "$0")/probe.log"
fi
exec tar "$@"
