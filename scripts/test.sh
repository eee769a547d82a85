#!/usr/bin/env bash
# test.sh sets up a fresh Debian 12 machine (scripts/setup.sh) and runs the
# whole test suite: go vet; the pure-Go core built and tested with
# CGO_ENABLED=0; the race detector on ring and gradcodec; then go test over
# every package with cgo. The suite
# includes real FFmpeg codecs, real worker processes on loopback, (as
# root, where `ip netns` works) two launchers in two network namespaces,
# and (as root) vccl jobs on a one-node Slurm the test starts itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go from go.dev installs into /usr/local/go, which a non-login shell may not have on PATH.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
bash scripts/setup.sh
bash scripts/setup-slurm.sh  # Debian's Slurm and munge for internal/slurmtest (root only)
go vet ./...
# The core is pure Go: it builds and its tests pass without cgo (no FFmpeg),
# where the video codecs are simply not registered.
core=(./gradcodec ./ring/... ./worker/... ./collective/... ./launcher/...)
CGO_ENABLED=0 go vet "${core[@]}"
CGO_ENABLED=0 go test -count=1 -timeout 10m "${core[@]}" "$@"
# The race detector over the packages whose tests fit the time budget.
go test -race -short -count=1 -timeout 10m ./ring/... ./gradcodec/... "$@"
# Everything, with cgo and the real FFmpeg codecs.
go test -count=1 -timeout 20m ./... "$@"
