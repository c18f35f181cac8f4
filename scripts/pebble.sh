# shellcheck shell=bash
# Sourced by scripts/test (and so by .ci/run) and scripts/bench: puts the Pebble daemon
# (https://github.com/canonical/pebble), which the PebbleContainer tests start, on PATH,
# installing it with `go install` when it is missing or not the pinned version.
# Run as root (CI), the binary goes to GOPATH/bin with mode 755, usable by every user.
# `return` when sourced, `exit` when run: one of the two is always unreachable.
# shellcheck disable=SC2317
pebble_version=v1.32.1
pebble_go=$(command -v go 2>/dev/null || true)
[ -z "$pebble_go" ] && [ -x /usr/local/go/bin/go ] && pebble_go=/usr/local/go/bin/go
if [ -z "$pebble_go" ]; then
  echo "go is missing: install Go 1.26.5 or newer (go.dev/doc/install), then run: go install github.com/canonical/pebble/cmd/pebble@$pebble_version" >&2
  return 1 2>/dev/null || exit 1
fi
pebble_bin="$("$pebble_go" env GOPATH)/bin"
export PATH="$pebble_bin:$PATH"
if ! "$pebble_bin/pebble" version --client 2>/dev/null | grep -q "${pebble_version#v}"; then
  echo "installing pebble $pebble_version into $pebble_bin" >&2
  # `go install pkg@version` also asks the module proxy for the module's version list
  # (to report a deprecation); a proxy that refuses that list fails the install, so
  # fall back to building the same version from a throw-away module.
  if ! (umask 022 && "$pebble_go" install "github.com/canonical/pebble/cmd/pebble@$pebble_version" 2>/dev/null) &&
    ! (umask 022 && pebble_mod=$(mktemp -d) && trap 'rm -rf "$pebble_mod"' EXIT && cd "$pebble_mod" &&
      "$pebble_go" mod init pebble-build >/dev/null 2>&1 &&
      "$pebble_go" get "github.com/canonical/pebble/cmd/pebble@$pebble_version" >/dev/null &&
      mkdir -p "$pebble_bin" && "$pebble_go" build -o "$pebble_bin/pebble" github.com/canonical/pebble/cmd/pebble); then
    echo "could not install pebble; run: go install github.com/canonical/pebble/cmd/pebble@$pebble_version" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
unset pebble_version pebble_go pebble_bin
