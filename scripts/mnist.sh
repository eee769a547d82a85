#!/usr/bin/env bash
# mnist.sh sets up a fresh Debian 12 machine (scripts/setup.sh) and runs the
# main job: data-parallel MNIST training on 4 worker processes under the
# launcher, first with gradients compressed by HEVC at 1.4 bits/value, then
# uncompressed (raw fp32) for comparison, and prints both side by side.
# Extra arguments go to both training runs (e.g. --epochs 1).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_and_build mnist
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

start=$(date +%s)
for codec in hevc raw; do
	echo "== 4 ranks, codec $codec"
	bin/launcher -np 4 --codec "$codec" --bpv 1.4 -- bin/mnist --csv "$out/$codec.csv" "$@"
done
elapsed=$(( $(date +%s) - start ))

# The last line of each CSV is the final epoch:
# epoch,loss,test_acc,bpv,wire_bytes,raw_bytes,time_s,codec,ranks
echo
echo "== Final epoch, side by side (both runs took ${elapsed}s)"
printf '%-6s %8s %10s %8s %12s\n' codec loss test_acc bpv wire_MB
for codec in hevc raw; do
	tail -n 1 "$out/$codec.csv" | awk -F, -v c="$codec" '{ printf "%-6s %8.4f %9.2f%% %8.2f %12.1f\n", c, $2, $3, $4, $5/1e6 }'
done
hevc_acc=$(tail -n 1 "$out/hevc.csv" | cut -d, -f3)
raw_acc=$(tail -n 1 "$out/raw.csv" | cut -d, -f3)
awk -v h="$hevc_acc" -v r="$raw_acc" 'BEGIN { printf "hevc - raw: %+.2f percentage points of test accuracy\n", h - r }'
