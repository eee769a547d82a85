#!/usr/bin/env bash
# lm.sh sets up a fresh Debian 12 machine (scripts/setup.sh) and trains the
# byte-level transformer language model (examples/lm) on the Go
# distribution's own source, data-parallel on 4 worker processes under the
# launcher: uncompressed (raw fp32), then with gradients compressed by H.264
# and by HEVC at 1.4 bits/value (and by the entropy-coded `tensor` codec when
# this build registers it), all with the same seed and steps, and prints the
# final validation perplexities side by side.
#
# Environment: LM_CODECS overrides the codec list (e.g. "raw hevc"),
# LM_BPV the target rate (1.4), LM_OUT keeps the CSVs and logs in that
# directory. Extra arguments go to every training run (e.g. --steps 600
# --seed 2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_and_build lm
if [ -n "${LM_OUT:-}" ]; then
	out=$LM_OUT
	mkdir -p "$out"
else
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi
bpv=${LM_BPV:-1.4}
codecs=${LM_CODECS:-}
if [ -z "$codecs" ]; then
	codecs="raw h264 hevc"
	if bin/lm --list-codecs | grep -qx tensor; then
		codecs="$codecs tensor"
	fi
fi

# Each run records its wall time, the CPU time of all its processes (user +
# sys: on a shared machine wall time depends on the other load, CPU time
# hardly), and the 1-minute load average at its end.
TIMEFORMAT='%R %U %S'
for codec in $codecs; do
	echo "== 4 ranks, codec $codec (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
	{ time bin/launcher -np 4 --codec "$codec" --bpv "$bpv" -- bin/lm --csv "$out/$codec.csv" "$@" 2>&1 |
		tee "$out/$codec.log" | grep -v '^\[[0-9]*\] train ' >&3; } 3>&1 2> "$out/$codec.time"
	echo "$(cut -d' ' -f1 /proc/loadavg)" > "$out/$codec.load"
done

# The last line of each CSV is the final evaluation:
# step,train_loss,val_loss,val_ppl,bpv,wire_bytes,raw_bytes,time_s,codec,ranks,unigram_ppl
echo
first=${codecs%% *}
echo "== Final validation, side by side (unigram baseline perplexity $(tail -n 1 "$out/$first.csv" | cut -d, -f11))"
printf '%-7s %6s %9s %8s %9s %7s %10s %7s %7s %5s\n' codec steps val_loss val_ppl "vs $first" bpv wire_MB wall_s cpu_s load
ref=$(tail -n 1 "$out/$first.csv" | cut -d, -f4)
for codec in $codecs; do
	tail -n 1 "$out/$codec.csv" | awk -F, -v c="$codec" -v r="$ref" -v t="$(tail -n 1 "$out/$codec.time")" -v l="$(cat "$out/$codec.load")" \
		'{ split(t, x, " "); printf "%-7s %6d %9.4f %8.3f %+8.2f%% %7.2f %10.1f %7.0f %7.0f %5.1f\n", c, $1, $3, $4, 100*($4/r-1), $5, $6/1e6, x[1], x[2]+x[3], l }'
done
echo "(wall_s: wall-clock seconds of the run; cpu_s: user+sys CPU seconds of all its processes; load: 1-minute load average at its end)"
