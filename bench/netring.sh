#!/usr/bin/env bash
# netring.sh — shaped-link multi-host allreduce benchmark for vccl, with the
# uncompressed torch.distributed baseline (Gloo on CPUs, NCCL with a GPU) in
# the same table.
#
# Builds HOSTS (default 4) "hosts" as network namespaces, each joined by a veth
# pair to a bridge that lives in its own namespace, shapes every host link in
# both directions with `tc qdisc … tbf` (and optionally `netem delay`), then runs
# examples/allreduce_perf on the hosts through the multi-node launcher (one
# launcher per host namespace, -np 1 each, --nnodes HOSTS) once per codec and
# rate, and prints one table: rate, size, codec, time per allreduce, effective
# bus bandwidth (uncompressed bytes per second), speedup versus raw, achieved
# bits per value.
#
# The codec "gloo" (or "nccl") runs bench/torch_allreduce.py — torch.distributed
# all_reduce with allreduce_perf's sizes, method and columns — on the same hosts
# (GLOO_SOCKET_IFNAME set to the host's interface), so each row also shows its
# time relative to that baseline. --loopback runs the same jobs on this machine
# over 127.0.0.1 without namespaces or root; --sweeps repeats the whole run and
# the table then gives each setting's median, its spread (slowest/fastest) and
# every sweep's time. The machine's load (uptime) is printed with the table.
#
# Every address used (10.77.0.0/24) lives only inside the namespaces this
# script creates; nothing is sent anywhere else. The namespaces, the bridge and
# the veths are removed on every exit path, Ctrl-C included.
#
# Needs root (ip netns, tc; apt-get for python3-torch when gloo is asked for and
# missing) and Go. Run from anywhere:
#   sudo bench/netring.sh --rate 1gbit,100mbit --sizes 64M
#   sudo bench/netring.sh --rate 100mbit --codecs raw,hevc --sizes 1M,16M --iters 5 --json-out /tmp/nr
#   bench/netring.sh --loopback --codecs gloo,raw --sizes 64K,1M,16M,64M --sweeps 3 --iters 10
#   sudo bench/netring.sh --check            # plumbing + shaping check only (no vccl)
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/netring.sh [flags]

  --rate LIST      link rates, comma-separated, tc syntax (default 1gbit). e.g. 1gbit,100mbit
  --delay D        one-way delay added on every host link with netem, e.g. 1ms (default none)
  --sizes LIST     allreduce sizes in bytes, K/M/G suffixes, comma-separated (default 64M)
  --codecs LIST    codecs, comma-separated (default gloo,raw,fp16,h264,hevc); gloo and nccl are the
                   torch.distributed baseline (bench/torch_allreduce.py); gloo-pin (--loopback only) is
                   Gloo with its ranks bound to CPUs as vccl's launcher binds its own (--bind cpus)
  --iters N        timed iterations per size (default 3)
  --warmup N       warm-up iterations per size (default 1)
  --bpv B          target bits per value for video codecs (default 1.4)
  --hosts N        number of host namespaces, one rank each (default 4)
  --json-out DIR   keep the tagged -json records (DIR/netring.jsonl, input of examples/plot), the table
                   and every node's raw output in DIR
  --no-check       run allreduce_perf with -c 0 (no NMSE / #wrong check after the timed iterations)
  --timeout DUR    per-job launcher timeout (default 15m)
  --check          only build the namespaces, shape them and measure ring-neighbour TCP throughput
  --loopback       no namespaces and no shaping: all ranks on this machine over 127.0.0.1 (no root);
                   vccl's ranks move payloads through shared memory there (Gloo's over TCP); run with
                   VCCL_SHM=off in the environment for vccl over loopback TCP too
  --sweeps N       run everything N times (default 1); the table shows median, spread and each sweep
  --mnist          also train examples/mnist (3 epochs unless --epochs) per codec (not gloo/nccl) and
                   report time per epoch and final test accuracy
  --epochs N       MNIST epochs with --mnist (default 3)
  -h, --help       this help

The first table's busbw is nccl-tests' bus bandwidth computed from the
uncompressed size (algbw * 2(n-1)/n), so a compressed codec that finishes sooner
shows a higher busbw; speedup is raw's time divided by the codec's time at the
same rate and size; bpv is the achieved bits per value on the wire. The second
table compares every row with the baseline: vs-base is the row's median time
divided by gloo's (nccl's) at the same rate and size (below 1: faster than the
baseline), spread is the slowest sweep's time over the fastest, alloc/op the Go
heap allocated per allreduce on the rank that allocated most.
EOF
}

RATES="1gbit"
DELAY=""
SIZES="64M"
CODECS="gloo,raw,fp16,h264,hevc"
LOOPBACK=0
SWEEPS=1
MNIST=0
EPOCHS=3
PYTHON="${PYTHON:-/usr/bin/python3}"
ITERS=3
WARMUP=1
BPV=1.4
HOSTS=4
JSON_OUT=""
TIMEOUT="15m"
CHECK=0
CHECK_RESULTS=1

die() { echo "netring: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--rate) RATES="${2:?--rate needs a value}"; shift 2 ;;
	--rate=*) RATES="${1#*=}"; shift ;;
	--delay) DELAY="${2:?--delay needs a value}"; shift 2 ;;
	--delay=*) DELAY="${1#*=}"; shift ;;
	--sizes) SIZES="${2:?--sizes needs a value}"; shift 2 ;;
	--sizes=*) SIZES="${1#*=}"; shift ;;
	--codecs) CODECS="${2:?--codecs needs a value}"; shift 2 ;;
	--codecs=*) CODECS="${1#*=}"; shift ;;
	--iters) ITERS="${2:?--iters needs a value}"; shift 2 ;;
	--iters=*) ITERS="${1#*=}"; shift ;;
	--warmup) WARMUP="${2:?--warmup needs a value}"; shift 2 ;;
	--warmup=*) WARMUP="${1#*=}"; shift ;;
	--bpv) BPV="${2:?--bpv needs a value}"; shift 2 ;;
	--bpv=*) BPV="${1#*=}"; shift ;;
	--hosts) HOSTS="${2:?--hosts needs a value}"; shift 2 ;;
	--hosts=*) HOSTS="${1#*=}"; shift ;;
	--json-out) JSON_OUT="${2:?--json-out needs a value}"; shift 2 ;;
	--json-out=*) JSON_OUT="${1#*=}"; shift ;;
	--timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
	--timeout=*) TIMEOUT="${1#*=}"; shift ;;
	--check) CHECK=1; shift ;;
	--loopback) LOOPBACK=1; shift ;;
	--sweeps) SWEEPS="${2:?--sweeps needs a value}"; shift 2 ;;
	--sweeps=*) SWEEPS="${1#*=}"; shift ;;
	--mnist) MNIST=1; shift ;;
	--epochs) EPOCHS="${2:?--epochs needs a value}"; shift 2 ;;
	--epochs=*) EPOCHS="${1#*=}"; shift ;;
	--no-check) CHECK_RESULTS=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

# --- input validation -------------------------------------------------------
[[ "$ITERS" =~ ^[1-9][0-9]*$ ]] || die "--iters must be a positive integer, got '$ITERS'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "--warmup must be a non-negative integer, got '$WARMUP'"
[[ "$SWEEPS" =~ ^[1-9][0-9]*$ ]] || die "--sweeps must be a positive integer, got '$SWEEPS'"
[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, got '$EPOCHS'"
[[ "$HOSTS" =~ ^[0-9]+$ ]] && [ "$HOSTS" -ge 2 ] && [ "$HOSTS" -le 200 ] ||
	die "--hosts must be an integer in 2..200, got '$HOSTS'"
[[ "$BPV" =~ ^[0-9]*\.?[0-9]+$ ]] || die "--bpv must be a positive number, got '$BPV'"
IFS=, read -r -a RATE_LIST <<<"$RATES"
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
IFS=, read -r -a CODEC_LIST <<<"$CODECS"
[ ${#RATE_LIST[@]} -gt 0 ] || die "--rate is empty"
[ ${#SIZE_LIST[@]} -gt 0 ] || die "--sizes is empty"
[ ${#CODEC_LIST[@]} -gt 0 ] || die "--codecs is empty"

# rate_bps converts a tc rate (100mbit, 1gbit, 500kbit, 12mbps, 1000000bit) to bits per second.
rate_bps() {
	local r="${1,,}" n unit
	[[ "$r" =~ ^([0-9]+)([a-z]*)$ ]] || return 1
	n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[2]}"
	case "$unit" in
	bit | "") echo "$n" ;;
	kbit) echo $((n * 1000)) ;;
	mbit) echo $((n * 1000000)) ;;
	gbit) echo $((n * 1000000000)) ;;
	bps) echo $((n * 8)) ;;
	kbps) echo $((n * 8000)) ;;
	mbps) echo $((n * 8000000)) ;;
	gbps) echo $((n * 8000000000)) ;;
	*) return 1 ;;
	esac
}
for r in "${RATE_LIST[@]}"; do
	bps=$(rate_bps "$r") || die "--rate: cannot read '$r' (use tc units such as 100mbit or 1gbit)"
	[ "$bps" -ge 100000 ] || die "--rate: '$r' is below 100kbit"
done
for s in "${SIZE_LIST[@]}"; do
	[[ "$s" =~ ^[0-9]+[KkMmGg]?$ ]] || die "--sizes: cannot read '$s' (use bytes with an optional K/M/G suffix)"
done
for c in "${CODEC_LIST[@]}"; do
	case "$c" in raw | fp16 | bf16 | int8 | tensor | h264 | hevc | gloo | nccl) ;;
	gloo-pin) [ "$LOOPBACK" = 1 ] || die "--codecs: gloo-pin needs --loopback (one rank per host has nothing to bind)" ;;
	*) die "--codecs: unknown codec '$c' (gloo|gloo-pin|nccl|raw|fp16|bf16|int8|tensor|h264|hevc)" ;; esac
done
[ -z "$DELAY" ] || [[ "$DELAY" =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || die "--delay: cannot read '$DELAY' (e.g. 500us, 1ms)"

if [ "$LOOPBACK" = 0 ]; then
	[ "$(id -u)" = 0 ] || die "needs root for ip netns and tc (run with sudo), or use --loopback"
	command -v ip >/dev/null || die "'ip' (iproute2) not found"
	command -v tc >/dev/null || die "'tc' (iproute2) not found"
fi
command -v go >/dev/null || die "'go' not found on PATH"
NEED_TORCH=0
for c in "${CODEC_LIST[@]}"; do case "$c" in gloo | gloo-pin | nccl) NEED_TORCH=1 ;; esac; done
if [ "$NEED_TORCH" = 1 ] && [ "$CHECK" = 0 ] && ! "$PYTHON" -c 'import torch' 2>/dev/null; then
	# The baseline's own setup: Debian's torch (CPU; Gloo included).
	[ "$(id -u)" = 0 ] || die "$PYTHON cannot import torch; install python3-torch (apt-get install python3-torch) or run as root"
	echo "netring: installing python3-torch (the torch.distributed baseline)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch >&2 || die "apt-get install python3-torch failed"
	"$PYTHON" -c 'import torch' || die "$PYTHON still cannot import torch"
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TAG="vnr$$"            # unique per run: several runs (and tests) may share the machine
BRNS="${TAG}br"        # the bridge namespace
SUBNET="10.77.0"       # only ever inside our namespaces
WORK="$(mktemp -d -t netring.XXXXXX)"
BIN="$WORK/bin"
PIDS=()

hostns() { echo "${TAG}h$1"; }
hostip() { echo "$SUBNET.$(($1 + 1))"; }

# --- cleanup on every exit path ---------------------------------------------
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local p
	for p in "${PIDS[@]}"; do
		# each job runs in its own process group (setsid), so this reaches the ranks too
		kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	local ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${TAG}(br|h[0-9]+)$" || true); do
		# any process still inside (should be none) is ours: it was started in our namespace
		local pids
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "netring: interrupted, cleaning up" >&2; exit 130' INT
trap 'echo "netring: terminated, cleaning up" >&2; exit 143' TERM

# --- build ------------------------------------------------------------------
mkdir -p "$BIN"
echo "netring: building into $BIN" >&2
(cd "$ROOT" && go build -o "$BIN/netringtool" ./bench/netringtool) || die "go build ./bench/netringtool failed"
if [ "$CHECK" = 0 ]; then
	(cd "$ROOT" && go build -o "$BIN/launcher" ./launcher) || die "go build ./launcher failed"
	(cd "$ROOT" && go build -o "$BIN/allreduce_perf" ./examples/allreduce_perf) || die "go build ./examples/allreduce_perf failed"
	if [ "$MNIST" = 1 ]; then
		(cd "$ROOT" && go build -o "$BIN/mnist" ./examples/mnist) || die "go build ./examples/mnist failed"
	fi
fi

# --- topology ---------------------------------------------------------------
# shape DEV in NS to the rate $1 (tbf), with the optional netem delay in front.
shape() {
	local ns="$1" dev="$2" rate="$3" bps burst
	bps=$(rate_bps "$rate")
	# burst: 4 ms at the rate, at least 64 KiB so one GSO segment always fits.
	burst=$((bps / 8 / 250))
	[ "$burst" -ge 65536 ] || burst=65536
	if [ -n "$DELAY" ]; then
		ip netns exec "$ns" tc qdisc replace dev "$dev" root handle 1: netem delay "$DELAY" limit 100000 ||
			die "tc netem failed on $ns/$dev: --delay needs the sch_netem kernel module"
		ip netns exec "$ns" tc qdisc replace dev "$dev" parent 1:1 handle 10: tbf rate "$rate" burst "$burst" latency 100ms ||
			die "tc tbf failed on $ns/$dev"
	else
		ip netns exec "$ns" tc qdisc replace dev "$dev" root handle 1: tbf rate "$rate" burst "$burst" latency 100ms ||
			die "tc tbf failed on $ns/$dev (rate $rate)"
	fi
}

setup_topology() {
	ip netns add "$BRNS" || die "ip netns add $BRNS failed"
	ip -n "$BRNS" link set lo up
	ip -n "$BRNS" link add br0 type bridge
	ip -n "$BRNS" link set br0 up
	local i ns
	for ((i = 0; i < HOSTS; i++)); do
		ns=$(hostns "$i")
		ip netns add "$ns" || die "ip netns add $ns failed"
		ip -n "$ns" link set lo up
		ip -n "$ns" link add eth0 type veth peer name "vh$i" netns "$BRNS"
		ip -n "$BRNS" link set "vh$i" master br0
		ip -n "$BRNS" link set "vh$i" up
		ip -n "$ns" addr add "$(hostip "$i")/24" dev eth0
		ip -n "$ns" link set eth0 up
	done
}

# shape_all applies rate $1 to every host link, both directions: host egress
# on eth0 and host ingress as the bridge side's egress on vhI.
shape_all() {
	local i
	for ((i = 0; i < HOSTS; i++)); do
		shape "$(hostns "$i")" eth0 "$1"
		shape "$BRNS" "vh$i" "$1"
	done
}

# check_links measures TCP throughput host i -> host i+1 on every ring edge at
# once (the pattern of a ring allreduce) for about 2 seconds.
check_links() {
	local rate="$1" i j pids=() out="$WORK/check"
	mkdir -p "$out"
	for ((i = 0; i < HOSTS; i++)); do
		ip netns exec "$(hostns "$i")" "$BIN/netringtool" sink -listen "$(hostip "$i"):29400" -count 1 >"$out/sink$i" 2>&1 &
		pids+=($!)
		PIDS+=($!)
	done
	for ((i = 0; i < HOSTS; i++)); do
		j=$(((i + 1) % HOSTS))
		ip netns exec "$(hostns "$i")" "$BIN/netringtool" blast -to "$(hostip "$j"):29400" -seconds 2 >"$out/blast$i" 2>&1 &
		pids+=($!)
		PIDS+=($!)
	done
	local fail=0 p
	for p in "${pids[@]}"; do wait "$p" || fail=1; done
	PIDS=()
	for ((i = 0; i < HOSTS; i++)); do
		printf 'rate %-8s  h%d -> h%d  %s\n' "$rate" "$i" $(((i + 1) % HOSTS)) "$(cat "$out/blast$i")"
	done
	[ "$fail" = 0 ] || die "link check failed: $(cat "$out"/sink* "$out"/blast* | tr '\n' ' ')"
}

# --- one job: HOSTS launchers, one per namespace -----------------------------
RDZV_PORT=29500
TORCH_PORT=29600
# job_cmd prints the command of one rank (node $1) of a job of codec $2:
# allreduce_perf (or, with JOB=mnist, the MNIST example) under the launcher,
# or the torch baseline.
job_cmd() {
	local i="$1" codec="$2"
	case "$codec" in
	gloo | gloo-pin | nccl)
		if [ "$LOOPBACK" = 1 ]; then
			echo "$PYTHON" "$ROOT/bench/torch_allreduce.py" --spawn "$HOSTS"
			[ "$codec" != gloo-pin ] || echo --bind cpus
		else
			echo env RANK="$i" WORLD_SIZE="$HOSTS" MASTER_ADDR="$(hostip 0)" MASTER_PORT="$TORCH_PORT" \
				GLOO_SOCKET_IFNAME=eth0 "$PYTHON" "$ROOT/bench/torch_allreduce.py"
		fi
		echo --backend "${codec%-pin}" -b "$SIZE_MIN" -e "$SIZE_MAX" -f "$FACTOR" -w "$WARMUP" -n "$ITERS" -c "$CHECK_RESULTS" -json
		return
		;;
	esac
	if [ "$LOOPBACK" = 1 ]; then
		echo "$BIN/launcher" --secret "$SECRET" --timeout "$TIMEOUT" -np "$HOSTS" --
	else
		echo "$BIN/launcher" --nnodes "$HOSTS" --node-rank "$i" --rdzv "$(hostip 0):$RDZV_PORT" --addr "$(hostip "$i")" \
			--secret "$SECRET" --timeout "$TIMEOUT" -np 1 --
	fi
	if [ "${JOB:-perf}" = mnist ]; then
		echo "$BIN/mnist" --epochs "$EPOCHS" --codec "$codec"
	else
		echo "$BIN/allreduce_perf" -b "$SIZE_MIN" -e "$SIZE_MAX" -f "$FACTOR" -w "$WARMUP" -n "$ITERS" \
			-c "$CHECK_RESULTS" -codec "$codec" -bpv "$BPV" -json
	fi
}

run_job() {
	local rate="$1" codec="$2" log="$3" i ns pids=() rc=0 nodes="$HOSTS"
	SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	[ "$LOOPBACK" = 0 ] || nodes=1
	for ((i = 0; i < nodes; i++)); do
		# setsid: own process group, so cleanup can signal the launcher and its ranks at once
		# shellcheck disable=SC2046 # job_cmd prints words
		if [ "$LOOPBACK" = 1 ]; then
			setsid $(job_cmd "$i" "$codec") >"$log.node$i.out" 2>"$log.node$i.err" &
		else
			ns=$(hostns "$i")
			setsid ip netns exec "$ns" $(job_cmd "$i" "$codec") >"$log.node$i.out" 2>"$log.node$i.err" &
		fi
		PIDS+=($!)
		pids+=($!)
	done
	local p
	for p in "${pids[@]}"; do wait "$p" || rc=$?; done
	PIDS=()
	if [ "$rc" != 0 ]; then
		echo "netring: job rate=$rate codec=$codec failed (exit $rc); node 0 stderr tail:" >&2
		tail -n 20 "$log.node0.err" >&2 || true
		for ((i = 1; i < nodes; i++)); do
			[ -s "$log.node$i.err" ] && { echo "--- node $i stderr tail:" >&2; tail -n 5 "$log.node$i.err" >&2; }
		done
		return "$rc"
	fi
}

[ "$LOOPBACK" = 1 ] || setup_topology

if [ "$CHECK" = 1 ]; then
	[ "$LOOPBACK" = 0 ] || die "--check needs the namespaces (drop --loopback)"
	for rate in "${RATE_LIST[@]}"; do
		shape_all "$rate"
		check_links "$rate"
	done
	exit 0
fi

# allreduce_perf sweeps -b..-e by -f; netring runs one job per size so that
# any list of sizes works.
RESULTS="$WORK/results.jsonl"
MNIST_OUT="$WORK/mnist.txt"
: >"$RESULTS"
: >"$MNIST_OUT"
[ "$LOOPBACK" = 0 ] || RATE_LIST=(loopback)
LOAD_BEFORE=$(uptime)
for ((sweep = 1; sweep <= SWEEPS; sweep++)); do
	for rate in "${RATE_LIST[@]}"; do
		[ "$LOOPBACK" = 1 ] || shape_all "$rate"
		# Sizes outside, codecs inside: the rows compared with each other
		# run next to each other in time, so a load spike on a shared
		# machine hits a size's baseline and vccl rows alike.
		for size in "${SIZE_LIST[@]}"; do
			for codec in "${CODEC_LIST[@]}"; do
				SIZE_MIN="$size" SIZE_MAX="$size" FACTOR=2
				echo "netring: sweep=$sweep rate=$rate delay=${DELAY:-0} codec=$codec size=$size hosts=$HOSTS iters=$ITERS" >&2
				log="$WORK/job_${sweep}_${rate}_${codec}_${size}"
				run_job "$rate" "$codec" "$log"
				# node 0's stdout holds rank 0's -json lines, prefixed "[0] " by the launcher.
				"$BIN/netringtool" tag -rate "$rate" -delay "${DELAY:-0}" -hosts "$HOSTS" -codec "$codec" -sweep "$sweep" \
					<"$log.node0.out" >>"$RESULTS" ||
					die "no -json result in node 0's output for rate=$rate codec=$codec size=$size (see $log.node0.out)"
			done
		done
		for codec in "${CODEC_LIST[@]}"; do
			if [ "$MNIST" = 1 ] && [ "$sweep" = 1 ] && [ "${codec#gloo}" = "$codec" ] && [ "$codec" != nccl ]; then
				echo "netring: rate=$rate codec=$codec mnist epochs=$EPOCHS" >&2
				log="$WORK/mnist_${rate}_${codec}"
				JOB=mnist run_job "$rate" "$codec" "$log"
				JOB=perf
				# rank 0 prints "epoch E ... test accuracy A% ... (T s)" lines; keep them with rate and codec.
				sed -n 's/^\[0\] //p' "$log.node0.out" | grep -E '^epoch|accuracy' |
					sed "s/^/$rate $codec: /" >>"$MNIST_OUT" || true
			fi
		done
	done
done

{
	echo "# load before: $LOAD_BEFORE"
	echo "# load after:  $(uptime)"
	"$BIN/netringtool" table <"$RESULTS"
	echo "#"
	"$BIN/netringtool" compare <"$RESULTS"
	if [ -s "$MNIST_OUT" ]; then
		echo "#"
		echo "# MNIST, $HOSTS ranks, $EPOCHS epochs (rank 0's lines)"
		sed 's/^/  /' "$MNIST_OUT"
	fi
} | tee "$WORK/table.txt"
if [ -n "$JSON_OUT" ]; then
	mkdir -p "$JSON_OUT"
	cp "$RESULTS" "$JSON_OUT/netring.jsonl"
	cp "$WORK/table.txt" "$JSON_OUT/netring_table.txt"
	cp "$WORK"/job_*.out "$WORK"/job_*.err "$JSON_OUT/" 2>/dev/null || true
	echo "netring: results in $JSON_OUT" >&2
fi
