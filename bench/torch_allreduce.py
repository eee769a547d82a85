#!/usr/bin/env python3
"""torch_allreduce.py — the uncompressed baseline of vccl's benchmarks.

Times torch.distributed all_reduce (backend gloo on CPUs, nccl where a GPU and
NCCL are present) over the same sizes as examples/allreduce_perf and prints the
same nccl-tests columns, or with -json one object per size with the same keys
(codec is the backend's name: "gloo" or "nccl", "gloo-pin" with --bind cpus), so bench/netring.sh can put
Gloo, vccl raw and every codec in one table.

Methodology as allreduce_perf: every rank fills its input from (seed, rank);
each of -w warm-up and -n timed iterations copies the input into the buffer
and times one all_reduce (the copy is not timed); time is the mean of the
timed iterations on the slowest rank; algbw = size/time, busbw =
algbw*2(n-1)/n. With -c 1 one more all_reduce is checked: #wrong counts ranks
whose result differs bit for bit from rank 0's (SHA-256 compared through
all_gather), nmse is the squared error against the exact float64 sum divided
by its energy.

Ranks: under a launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT (torchrun, or bench/netring.sh, one per namespace host; inside a
namespace set GLOO_SOCKET_IFNAME to the host's interface), or with --spawn N
to start N local ranks on 127.0.0.1 (the loopback benchmark). With --spawn,
--bind cpus starts rank i on the i-th of N equal shares of this process's CPUs
(consecutive ranks share a CPU when the ranks are a multiple of the CPUs), the
placement vccl's launcher gives its ranks by default; torch's own launchers
leave placement to the kernel, as does the default --bind none.

Needs python3 and torch (Debian: apt-get install python3-torch).
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import time


def parse_size(s):
    t = s.strip().upper()
    if t.endswith("B"):
        t = t[:-1]
    if t.endswith("I"):
        t = t[:-1]
    mult = 1
    if t and t[-1] in "KMG":
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[t[-1]]
        t = t[:-1]
    if not t.isdigit():
        raise argparse.ArgumentTypeError(f"size {s!r}: want a byte count such as 1024, 1K, 64M or 1G")
    return int(t) * mult


def sizes(lo, hi, factor):
    out, s = [], lo
    while s <= hi:
        out.append(s)
        if s > hi // factor:
            break
        s *= factor
    return out


def fill(torch, count, seed, rank, out=None):
    g = torch.Generator()
    g.manual_seed(seed * 1000003 + rank)
    return torch.randn(count, generator=g, dtype=torch.float32, out=out)


def run(rank, world, args):
    import torch
    import torch.distributed as dist

    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dev = torch.device("cpu")
    label = backend + ("-pin" if getattr(args, "bound", False) else "")
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            init_method=f"tcp://{args.master_addr}:{args.master_port}")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    szs = sizes(args.b, args.e, args.f)
    maxc = szs[-1] // 4
    inp = fill(torch, maxc, args.seed, rank).to(dev)
    work = torch.empty(maxc, dtype=torch.float32, device=dev)
    op = dist.ReduceOp.SUM
    table = rank == 0 and not args.json
    if table:
        print(f"# torch.distributed {torch.__version__} all_reduce: {world} ranks, backend {backend}")
        print(f"# minBytes {args.b} maxBytes {args.e} step: {args.f}(factor) warmup iters: {args.w} iters: {args.n} validation: {args.c} seed: {args.seed}\n#")
        hdr = "#%11s %13s %9s %7s %6s %10s %8s %8s %6s %7s %7s %13s %10s"
        print(hdr % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "codec", "bpv", "wire", "nmse"))
        print(hdr % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "", "", "(B)", ""))
    bus_sum, total_wrong = 0.0, 0
    for size in szs:
        count = size // 4
        data = work[:count]
        total = 0.0
        for it in range(args.w + args.n):
            data.copy_(inp[:count])
            sync()
            t0 = time.perf_counter()
            dist.all_reduce(data, op=op)
            sync()
            el = time.perf_counter() - t0
            if it >= args.w:
                total += el
        t = torch.tensor([total], dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        time_us = t.item() / args.n * 1e6
        wrong, nmse = -1, -1.0
        if args.c == 1:
            data.copy_(inp[:count])
            dist.all_reduce(data, op=op)
            sync()
            res = data.cpu()
            h = hashlib.sha256(res.numpy().tobytes()).digest()
            ht = torch.tensor([int.from_bytes(h[i:i + 8], "little", signed=True) for i in range(0, 32, 8)],
                              dtype=torch.int64, device=dev)
            parts = [torch.zeros_like(ht) for _ in range(world)]
            dist.all_gather(parts, ht)
            wrong = sum(1 for p in parts[1:] if not torch.equal(p, parts[0]))
            exact = torch.zeros(count, dtype=torch.float64)
            tmp = torch.empty(count, dtype=torch.float32)
            for r in range(world):
                exact += fill(torch, count, args.seed, r, out=tmp).double()
            err = (res.double() - exact)
            den = float((exact * exact).sum())
            nmse = float((err * err).sum()) / den if den > 0 else 0.0
            total_wrong += wrong
        algbw = size / (time_us * 1e-6) / 1e9 if time_us > 0 else 0.0
        busbw = algbw * 2 * (world - 1) / world
        bus_sum += busbw
        if rank != 0:
            continue
        rec = {"size": size, "count": count, "type": "float", "redop": "sum", "root": -1,
               "time_us": time_us, "algbw": algbw, "busbw": busbw, "wrong": wrong, "codec": label,
               "bpv": 32.0, "wire_bytes": 2 * (world - 1) * size, "raw_bytes": 2 * (world - 1) * size,
               "nmse": nmse, "ranks": world, "iters": args.n}
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            print("%12d %13d %9s %7s %6d %10.1f %8.3f %8.3f %6s %7s %7.3f %13d %10s" % (
                size, count, "float", "sum", -1, time_us, algbw, busbw,
                str(wrong) if args.c == 1 else "N/A", label, 32.0, rec["wire_bytes"],
                "%.3e" % nmse if args.c == 1 else "N/A"), flush=True)
    if table:
        if args.c == 1:
            print(f"# Out of bounds values : {total_wrong} {'OK' if total_wrong == 0 else 'FAILED'}")
        print(f"# Avg bus bandwidth    : {bus_sum / len(szs):.5g} \n#")
    dist.barrier()
    dist.destroy_process_group()
    return 1 if total_wrong else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-b", type=parse_size, default=32 << 20, help="minimum size in bytes (K, M, G suffixes)")
    ap.add_argument("-e", type=parse_size, default=32 << 20, help="maximum size in bytes")
    ap.add_argument("-f", type=int, default=2, help="multiplication factor between sizes")
    ap.add_argument("-w", type=int, default=5, help="warm-up iterations per size")
    ap.add_argument("-n", type=int, default=20, help="timed iterations per size")
    ap.add_argument("-c", type=int, default=1, choices=(0, 1), help="check results")
    ap.add_argument("-json", action="store_true", help="one JSON object per size instead of the table")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    ap.add_argument("--spawn", type=int, default=0, help="start this many local ranks on 127.0.0.1")
    ap.add_argument("--bind", default="none", choices=("none", "cpus"),
                    help="with --spawn: cpus binds rank i to the i-th share of the CPUs, as vccl's launcher does")
    args = ap.parse_args()
    if args.b < 4 or args.e < args.b or args.f < 2 or args.n < 1 or args.w < 0:
        ap.error("want 4 <= -b <= -e, -f >= 2, -n >= 1, -w >= 0")
    if args.bind == "cpus" and not args.spawn:
        ap.error("--bind cpus places the ranks --spawn starts; under a launcher, bind with the launcher")
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("torch_allreduce: python3 cannot import torch (Debian: apt-get install python3-torch)")
    if args.spawn:
        import torch.multiprocessing as mp
        args.master_addr, args.master_port = "127.0.0.1", free_port()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_child, args=(r, args.spawn, args)) for r in range(args.spawn)]
        for p in procs:
            p.start()
        rc = 0
        for p in procs:
            p.join()
            rc = rc or p.exitcode
        sys.exit(rc)
    args.master_addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    args.master_port = int(os.environ.get("MASTER_PORT", "29500"))
    sys.exit(run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args))


def topo_order(cpus):
    """cpus by package, physical core, number, as vccl's launcher orders them."""
    def place(c):
        base = f"/sys/devices/system/cpu/cpu{c}/topology/"
        with open(base + "physical_package_id") as p, open(base + "core_id") as k:
            return int(p.read()), int(k.read())
    try:
        at = {c: place(c) for c in cpus}
    except (OSError, ValueError):
        return sorted(cpus)
    return sorted(cpus, key=lambda c: (at[c][0], at[c][1], c))


def cpu_share(cpus, rank, world):
    """The CPUs of rank in vccl's launcher's --bind cpus split of cpus."""
    cpus = topo_order(cpus)
    n = len(cpus)
    if n >= world:
        return cpus[rank * n // world:(rank + 1) * n // world]
    if world % n:
        return cpus  # uneven: vccl's launcher leaves such jobs unbound
    return [cpus[rank * n // world]]


def _child(rank, world, args):
    if args.bind == "cpus":
        allowed = os.sched_getaffinity(0)
        share = cpu_share(allowed, rank, world)
        os.sched_setaffinity(0, share)
        args.bound = set(share) != allowed
    sys.exit(run(rank, world, args))


if __name__ == "__main__":
    main()
