#!/usr/bin/env bash
# test.sh sets up a fresh Debian 12 machine (scripts/setup.sh) and runs the
# whole test suite: go vet, then go test over every package. The suite
# includes real FFmpeg codecs, real worker processes on loopback, and (as
# root, where `ip netns` works) two launchers in two network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go from go.dev installs into /usr/local/go, which a non-login shell may not have on PATH.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
bash scripts/setup.sh
go vet ./...
go test -count=1 -timeout 20m ./... "$@"
