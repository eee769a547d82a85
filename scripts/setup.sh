#!/usr/bin/env bash
# setup.sh installs what vccl needs on a fresh Debian 12 machine: FFmpeg's
# development packages (libavcodec), libx264/libx265 development packages (the
# video codecs call them directly), pkg-config and a C
# compiler for cgo, iproute2 for the network-namespace tests, and the Go
# modules. It is idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go from go.dev installs into /usr/local/go, which a non-login shell may not have on PATH.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"

pkgs=(pkg-config gcc libc6-dev libavcodec-dev libavformat-dev libavutil-dev
      libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libx264-dev libx265-dev
      iproute2 procps)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "setup: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go 1.26 or newer is required (https://go.dev/dl/); 'go' is not on PATH" >&2
	exit 1
fi
go mod download
