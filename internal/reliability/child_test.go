package reliability

// The code a rank process runs when the test binary re-executes itself
// (TestMain dispatches on VCCL_RELIABILITY_ROLE). Every role prints JSON
// events, one per line, on stdout.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/ring"
)

var stdoutMu sync.Mutex

// emit prints one event line; safe from any goroutine.
func emit(ev map[string]any) {
	if _, ok := ev["t_ns"]; !ok {
		ev["t_ns"] = time.Now().UnixNano()
	}
	b, _ := json.Marshal(ev)
	stdoutMu.Lock()
	os.Stdout.Write(append(b, '\n'))
	stdoutMu.Unlock()
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad %s=%q: %v\n", name, v, err)
			os.Exit(2)
		}
		return n
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad %s=%q: %v\n", name, v, err)
			os.Exit(2)
		}
		return f
	}
	return def
}

// jobEnv reads what every role reads first: rank, world size, steps
// (RELY_STEPS, default 3) and the tensor's rows and cols (RELY_ROWS,
// RELY_COLS, defaults given).
func jobEnv(defRows, defCols int) (rank, world, steps, rows, cols int) {
	return envInt("VCCL_RANK", -1), envInt("VCCL_RELIABILITY_WORLD", 0), envInt("RELY_STEPS", 3),
		envInt("RELY_ROWS", defRows), envInt("RELY_COLS", defCols)
}

func childMain(role string) int {
	switch role {
	case "allreduce":
		return childAllReduce()
	case "mangle":
		return childMangle()
	case "late":
		return childLate()
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
}

// value is rank r's deterministic input at step s, index i: an integer in
// [-1000, 1000], so that sums over a few ranks are exact in float32 in any
// order. Smooth along rows (neighbouring i differ by little) so that video
// codecs see a picture-like tensor.
func value(r, s, i int) float32 {
	v := ((r+1)*7919 + s*104729 + (i/7)*3 + (i%97)*5) % 2001
	return float32(v - 1000)
}

// fillInput writes rank r's input of step s into x; it returns the exact sum
// over world ranks in want.
func fillInput(x, want []float32, r, s, world int) {
	for i := range x {
		x[i] = value(r, s, i)
		var sum float32
		for q := 0; q < world; q++ {
			sum += value(q, s, i)
		}
		want[i] = sum
	}
}

func hashFloats(x []float32) string {
	h := fnv.New64a()
	var b [4]byte
	for _, v := range x {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		h.Write(b[:])
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// procField returns the number after prefix on a line of /proc/self/file
// (a trailing unit such as "kB" dropped), or -1.
func procField(file, prefix string) int64 {
	b, err := os.ReadFile("/proc/self/" + file)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// wchar returns the bytes this process has written through write(2) and
// friends (sockets included), from /proc/self/io.
func wchar() int64 { return procField("io", "wchar: ") }

// rssKB returns this process's resident memory in KiB.
func rssKB() int64 { return procField("status", "VmRSS:") }

// initError reports a failure to start (an "init_error" event) and returns
// the exit code of a handled error.
func initError(err error) int {
	emit(map[string]any{"ev": "init_error", "err": err.Error()})
	return 3
}

// errorEvent describes err as an "error" event.
func errorEvent(step int, err error, elapsed time.Duration) map[string]any {
	ev := map[string]any{
		"ev": "error", "step": step, "err": err.Error(), "elapsed_ns": elapsed.Nanoseconds(), "lost": -1,
		"peer_lost": errors.Is(err, collective.ErrPeerLost),
		"shape":     errors.Is(err, collective.ErrShapeMismatch),
		"nonfinite": errors.Is(err, collective.ErrNonFinite),
		"badframe":  errors.Is(err, collective.ErrBadFrame),
		"aborted":   errors.Is(err, collective.ErrAborted),
		"protocol":  errors.Is(err, ring.ErrProtocol),
	}
	var pl *collective.PeerLostError
	if errors.As(err, &pl) {
		ev["lost"] = pl.Rank
	}
	ev["timeout"] = errors.Is(err, collective.ErrTimeout)
	ev["absent"] = -1
	var te *collective.TimeoutError
	if errors.As(err, &te) {
		ev["absent"] = te.Absent
	}
	return ev
}

// killer arms a self-inflicted signal (SIGKILL for a crash, SIGSTOP for a
// stall, or running a command such as "ip link set eth0 down" for a cut)
// once this process has written threshold more bytes than at arming time.
type killer struct {
	stop chan struct{}
	done chan struct{}
}

func armKiller(threshold, expected int64, action func()) *killer {
	k := &killer{stop: make(chan struct{}), done: make(chan struct{})}
	base := wchar()
	go func() {
		defer close(k.done)
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-k.stop:
				return
			case <-t.C:
			}
			if d := wchar() - base; d >= threshold {
				frac := float64(d) / float64(expected)
				phase := "reduce-scatter"
				if frac >= 0.5 {
					phase = "allgather"
				}
				emit(map[string]any{"ev": "dying", "phase": phase, "frac": frac, "bytes": d})
				action()
				return
			}
		}
	}()
	return k
}

// disarm stops the watcher; it reports whether the action already ran.
func (k *killer) disarm() (fired bool) {
	select {
	case <-k.done:
		return true
	default:
	}
	close(k.stop)
	<-k.done
	return false
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func selfSignal(sig syscall.Signal) func() {
	return func() { syscall.Kill(os.Getpid(), sig) }
}

// childAllReduce runs RELY_STEPS allreduces (0: until rank 0 reads a line
// on stdin) of rows×cols values (or cycling through RELY_SHAPES), checks
// every result and prints events. Faults are injected by the RELY_*
// variables:
//
//	RELY_VICTIM, RELY_KILL_STEP, RELY_KILL_FRAC: the victim rank dies at
//	  that step: before the allreduce (FRAC < 0) or after writing FRAC of
//	  the bytes step KILL_STEP-1 wrote; RELY_KILL_SIG=STOP stalls instead,
//	  RELY_KILL_CMD runs a command (e.g. a link down) instead.
//	RELY_BAD_LEN_RANK: that rank passes one value more.
//	RELY_NAN_RANK / RELY_INF_RANK: that rank puts NaN / +Inf in its input.
//	RELY_ABSENT_RANK, RELY_ABSENT_STEP: that rank skips the allreduce of
//	  that step: it prints "absent" and waits, alive, until its stdin is
//	  closed, then enters the allreduce late.
//	RELY_SHAPE_WALK=1: a new shape (so a new stream) at every step.
//	RELY_RSS_EVERY: print RSS every that many steps.
func childAllReduce() int {
	rank, world, steps, rows, cols := jobEnv(256, 256)
	victim := envInt("RELY_VICTIM", -1)
	killStep := envInt("RELY_KILL_STEP", -1)
	killFrac := envFloat("RELY_KILL_FRAC", -1)
	badLen := envInt("RELY_BAD_LEN_RANK", -1)
	nanRank := envInt("RELY_NAN_RANK", -1)
	infRank := envInt("RELY_INF_RANK", -1)
	rssEvery := envInt("RELY_RSS_EVERY", 0)
	absentRank, absentStep := envInt("RELY_ABSENT_RANK", -1), envInt("RELY_ABSENT_STEP", -1)
	shapeWalk := os.Getenv("RELY_SHAPE_WALK") == "1"
	opEvery := envInt("RELY_OP_EVERY", 1)
	maxNMSE := envFloat("RELY_MAX_NMSE", 0.5)
	type shape struct{ r, c int }
	shapes := []shape{{rows, cols}}
	if v := os.Getenv("RELY_SHAPES"); v != "" {
		shapes = nil
		for _, s := range strings.Split(v, ",") {
			a, b, _ := strings.Cut(s, "x")
			r, _ := strconv.Atoi(a)
			c, _ := strconv.Atoi(b)
			shapes = append(shapes, shape{r, c})
		}
	}

	// Rank 0 of an open-ended job stops when a line arrives on stdin.
	var stopFlag sync.Once
	stopCh := make(chan struct{})
	if steps == 0 && rank == 0 {
		go func() {
			bufio.NewReader(os.Stdin).ReadString('\n')
			stopFlag.Do(func() { close(stopCh) })
		}()
	}
	baseG := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	emit(map[string]any{"ev": "start"})
	c, err := collective.InitFromEnv(ctx)
	if err != nil {
		ev := errorEvent(-1, err, time.Since(t0))
		ev["ev"] = "init_error"
		emit(ev)
		return 3
	}
	emit(map[string]any{"ev": "init"})
	// A barrier first: every rank is past Init before any fault is injected.
	if err := c.Barrier(ctx); err != nil {
		emit(errorEvent(-1, err, time.Since(t0)))
		return 3
	}
	emit(map[string]any{"ev": "ready", "init_ns": time.Since(t0).Nanoseconds()})

	finish := func(code int) int {
		cerr := c.Close()
		// Goroutines must go back to what the process had before Init.
		deadline := time.Now().Add(3 * time.Second)
		n := runtime.NumGoroutine()
		for n > baseG && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling a count, bounded: no synchronisation intended
			n = runtime.NumGoroutine()
		}
		ev := map[string]any{"ev": "closed", "goroutines": n, "base": baseG, "leaked": n > baseG}
		if cerr != nil && code == 0 {
			ev["close_err"] = cerr.Error()
		}
		if n > baseG {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d > %d\n%s", n, baseG, b.String())
		}
		emit(ev)
		return code
	}

	var lastBytes int64
	var x, want []float32
	flag := make([]float32, 1)
	for s := 0; steps == 0 || s < steps; s++ {
		if steps == 0 {
			// Rank 0 decides for everyone whether to go on.
			flag[0] = 1
			if rank == 0 {
				select {
				case <-stopCh:
					flag[0] = 0
				default:
				}
			}
			if err := c.Broadcast(ctx, flag, 0); err != nil {
				emit(errorEvent(s, err, 0))
				return finish(3)
			}
			if flag[0] == 0 {
				break
			}
		}
		sh := shapes[s%len(shapes)]
		if shapeWalk {
			// A shape of its own at every step (period 61*67 steps).
			sh = shape{40 + s%61, 64 + s%67}
		}
		n := sh.r * sh.c
		if cap(x) < n+1 {
			x, want = make([]float32, n+1), make([]float32, n+1)
		}
		x, want = x[:n], want[:n]
		fillInput(x, want, rank, s, world)
		opts := []collective.Option{collective.WithShape(sh.r, sh.c), collective.WithStream(fmt.Sprintf("t%dx%d", sh.r, sh.c))}
		if rank == badLen {
			x = x[:n+1]
			x[n] = 1
			opts = opts[1:] // a shape would not cover the extra value
		}
		if rank == nanRank {
			x[n/2] = float32(math.NaN())
		}
		if rank == infRank {
			x[n/3] = float32(math.Inf(1))
		}
		var k *killer
		act := func() {}
		if rank == victim && s == killStep {
			act = selfSignal(syscall.SIGKILL)
			if os.Getenv("RELY_KILL_SIG") == "STOP" {
				act = selfSignal(syscall.SIGSTOP)
			}
			if cmd := os.Getenv("RELY_KILL_CMD"); cmd != "" {
				act = func() {
					f := strings.Fields(cmd)
					out, err := execCommand(f[0], f[1:]...)
					if err != nil {
						fmt.Fprintf(os.Stderr, "RELY_KILL_CMD %q: %v: %s\n", cmd, err, out)
					}
				}
			}
			if killFrac < 0 {
				emit(map[string]any{"ev": "dying", "phase": "before"})
				act()
			} else {
				k = armKiller(int64(killFrac*float64(lastBytes)), lastBytes, act)
			}
		}
		if rank == absentRank && s == absentStep {
			emit(map[string]any{"ev": "absent", "step": s})
			io.Copy(io.Discard, os.Stdin) // until the harness closes stdin
		}
		before := wchar()
		start := time.Now()
		st, err := c.AllReduce(ctx, x, opts...)
		el := time.Since(start)
		lastBytes = wchar() - before
		if k != nil && !k.disarm() {
			// The allreduce finished before the threshold: die now, between
			// this allreduce and the next.
			emit(map[string]any{"ev": "dying", "phase": "after"})
			act()
		}
		if err != nil {
			emit(errorEvent(s, err, el))
			return finish(3)
		}
		exact := true
		var se, sx float64
		for i := range want {
			d := float64(x[i] - want[i])
			se += d * d
			sx += float64(want[i]) * float64(want[i])
			if x[i] != want[i] {
				exact = false
			}
		}
		nmse := se / math.Max(sx, 1e-30)
		if math.IsNaN(nmse) || nmse > maxNMSE {
			emit(map[string]any{"ev": "wrong", "step": s, "nmse": nmse})
			return finish(4)
		}
		if s%opEvery == 0 || (steps > 0 && s == steps-1) {
			emit(map[string]any{"ev": "op", "step": s, "hash": hashFloats(x), "exact": exact, "nmse": nmse,
				"bpv": st.BitsPerValue(), "codec": st.Codec, "elapsed_ns": el.Nanoseconds(), "bytes": lastBytes})
		}
		if rssEvery > 0 && (s+1)%rssEvery == 0 {
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			emit(map[string]any{"ev": "rss", "step": s + 1, "rss_kb": rssKB(), "heap_kb": int64(ms.HeapInuse / 1024)})
		}
	}
	emit(map[string]any{"ev": "done"})
	return finish(0)
}
