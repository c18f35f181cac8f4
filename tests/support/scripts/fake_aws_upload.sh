#!/usr/bin/env bash
# A stand-in for the aws CLI in tests whose bucket is a MemoryStore: `s3 cp ... - URL`
# (the backup pipeline's upload) writes standard input to `upload.body`, the URL to
# `upload.url` and the `--metadata` argument to `upload.meta`, beside this script; the
# test's container wrapper puts them into the store. Anything else fails.
set -euo pipefail
here=${0%/*}
if [ "${1:-}" != s3 ] || [ "${2:-}" != cp ]; then
  echo "fake aws: unsupported: $*" >&2
  exit 2
fi
url=${!#}
meta=
prev=
for a in "$@"; do
  if [ "$prev" = --metadata ]; then meta=$a; fi
  prev=$a
done
cat >"$here/upload.body"
printf '%s' "$url" >"$here/upload.url"
printf '%s' "$meta" >"$here/upload.meta"
