package reliability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// mangler wraps a rank's outgoing link and, at operation atOp, replaces the
// first message of kind kind with a damaged one:
//
//	truncate: the payload cut in half
//	corrupt:  bytes of the payload flipped (its header and its body)
//	replay:   the message of the same slot from the previous operation,
//	          sent again as it was (old op number included)
//	foreign:  a message of another job: same op, but another tensor's
//	          size and payload (made by another codec instance)
//	oversize: a payload of RELY_OVERSIZE bytes (default 128 MiB), far
//	          beyond the sub-chunk the receiver expects (a hostile length)
type mangler struct {
	ring.Link
	mode    string
	atOp    uint64
	kind    ring.Kind
	mu      sync.Mutex
	prev    map[[4]uint32]ring.Message // messages of op atOp-1 by slot
	done    bool
	foreign []byte
}

func slot(m ring.Message) [4]uint32 { return [4]uint32{uint32(m.Kind), m.Hop, m.Chunk, m.Sub} }

func (l *mangler) Send(ctx context.Context, m ring.Message) error {
	l.mu.Lock()
	if m.Op == l.atOp-1 {
		c := m
		c.Payload = append([]byte(nil), m.Payload...)
		l.prev[slot(m)] = c
	}
	fire := m.Op == l.atOp && m.Kind == l.kind && !l.done
	if fire {
		l.done = true
	}
	l.mu.Unlock()
	if !fire {
		return l.Link.Send(ctx, m)
	}
	orig := len(m.Payload)
	switch l.mode {
	case "truncate":
		m.Payload = append([]byte(nil), m.Payload[:len(m.Payload)/2]...)
	case "corrupt":
		p := append([]byte(nil), m.Payload...)
		for _, i := range []int{len(p) / 2, len(p) / 3, 2 * len(p) / 3, 20} {
			if i < len(p) {
				p[i] ^= 0x5a
			}
		}
		m.Payload = p
	case "replay":
		old, ok := l.prev[slot(m)]
		if !ok {
			return fmt.Errorf("mangler: no message of op %d in slot %v to replay", l.atOp-1, slot(m))
		}
		m = old
	case "foreign":
		m.Total = m.Total*2 + 64
		m.Payload = l.foreign
	case "oversize":
		m.Payload = make([]byte, envInt("RELY_OVERSIZE", 128<<20))
		m.Sum = 0
	default:
		return fmt.Errorf("mangler: unknown mode %q", l.mode)
	}
	emit(map[string]any{"ev": "mangled", "detail": fmt.Sprintf("%s op %d kind %d hop %d chunk %d sub %d: %d -> %d payload bytes",
		l.mode, m.Op, m.Kind, m.Hop, m.Chunk, m.Sub, orig, len(m.Payload))})
	return l.Link.Send(ctx, m)
}

// childMangle is a rank that runs ring allreduces directly over the
// worker's real websocket links (collective offers no way to wrap a link):
// RELY_STEPS allreduces of RELY_ROWS×RELY_COLS values with codec
// VCCL_CODEC; rank RELY_MANGLER damages one message of op RELY_MANGLE_OP.
func childMangle() int {
	rank, world, steps, rows, cols := jobEnv(128, 256)
	manglerRank := envInt("RELY_MANGLER", -1)
	atOp := uint64(envInt("RELY_MANGLE_OP", 2))
	kind := ring.Kind(envInt("RELY_MANGLE_KIND", int(ring.KindReduceScatter)))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		return initError(err)
	}
	w, err := worker.Start(ctx, cfg)
	if err != nil {
		return initError(err)
	}
	defer w.Close()
	opts := gradcodec.DefaultOptions()
	opts.Codec = os.Getenv("VCCL_CODEC")
	codec, err := ring.NewGradCodec(opts, true)
	if err != nil {
		return initError(err)
	}
	defer codec.Close()
	next := w.Next()
	if rank == manglerRank {
		m := &mangler{Link: next, mode: os.Getenv("RELY_MANGLE"), atOp: atOp, kind: kind, prev: map[[4]uint32]ring.Message{}}
		if m.mode == "foreign" {
			// A frame another job would send: another codec instance, another size.
			other, err := ring.NewGradCodec(opts, false)
			if err != nil {
				return initError(err)
			}
			src := make([]float32, 64*64)
			for i := range src {
				src[i] = float32(i%17) - 8
			}
			recon := make([]float32, len(src))
			m.foreign, err = other.Encode("other-job", src, []gradcodec.Shape{{Rows: 64, Cols: 64}}, recon)
			other.Close()
			if err != nil {
				return initError(err)
			}
		}
		next = m
	}
	r := &ring.Ring{Rank: w.Rank(), Size: w.Size(), Next: next, Prev: w.Prev()}
	emit(map[string]any{"ev": "ready"})
	x, want := make([]float32, rows*cols), make([]float32, rows*cols)
	var ms runtime.MemStats
	for s := 0; s < steps; s++ {
		fillInput(x, want, rank, s, world)
		op := uint64(s + 1)
		runtime.ReadMemStats(&ms)
		alloc0 := ms.TotalAlloc
		_, err := r.AllReduce(ctx, x, ring.Options{Op: op, Layout: []gradcodec.Shape{{Rows: rows, Cols: cols}}, Codec: codec, Stream: "t"})
		if err != nil {
			runtime.ReadMemStats(&ms)
			ev := errorEvent(s, err, 0)
			ev["bytes"] = ms.TotalAlloc - alloc0 // heap allocated during the failed op
			ev["badframe"] = errors.Is(err, gradcodec.ErrBadFrame)
			ev["shape"] = errors.Is(err, ring.ErrShapeMismatch) || errors.Is(err, gradcodec.ErrShapeMismatch)
			emit(ev)
			return 3
		}
		var se, sx float64
		for i := range want {
			d := float64(x[i] - want[i])
			se += d * d
			sx += float64(want[i]) * float64(want[i])
		}
		emit(map[string]any{"ev": "op", "step": s, "hash": hashFloats(x), "nmse": se / sx})
	}
	emit(map[string]any{"ev": "done"})
	return 0
}

// TestReliabilityBadFrames damages one message on the link from rank 1 to
// rank 2 in the third allreduce (op 3) — truncated, corrupted, replayed from
// op 2, or another job's — during reduce-scatter and during allgather, with
// raw and h264. The receiver must reject it with an error (bad frame,
// protocol or shape mismatch), no rank may return a result for that
// allreduce, and every rank must end with an error.
func TestReliabilityBadFrames(t *testing.T) {
	rs, ag := ring.KindReduceScatter, ring.KindAllGather
	cases := []struct {
		codec, mode string
		kind        ring.Kind
	}{
		{"raw", "truncate", rs}, {"raw", "corrupt", rs}, {"raw", "replay", rs}, {"raw", "foreign", rs},
		{"raw", "corrupt", ag}, {"raw", "replay", ag},
		{"h264", "truncate", ag}, {"h264", "corrupt", rs}, {"h264", "corrupt", ag},
	}
	for _, c := range cases {
		phase := map[ring.Kind]string{rs: "rs", ag: "ag"}[c.kind]
		t.Run(fmt.Sprintf("%s_%s_%s", c.codec, c.mode, phase), func(t *testing.T) {
			t.Parallel()
			badFrameTrial(t, c.codec, c.mode, c.kind)
		})
	}
}

func badFrameTrial(t *testing.T, codec, mode string, kind ring.Kind) {
	const mangler, receiver, atOp = 1, 2, 3
	j := startJob(t, jobSpec{
		world: 4,
		role:  "mangle",
		env: map[string]string{
			"VCCL_CODEC":       codec,
			"RELY_STEPS":       "4",
			"RELY_ROWS":        "128",
			"RELY_COLS":        "256",
			"RELY_MANGLER":     strconv.Itoa(mangler),
			"RELY_MANGLE":      mode,
			"RELY_MANGLE_OP":   strconv.Itoa(atOp),
			"RELY_MANGLE_KIND": strconv.Itoa(int(kind)),
		},
		peerTimeout: 5 * time.Second,
	})
	deadline := time.Now().Add(40 * time.Second)
	for _, p := range j.procs {
		errEv := failingStep(t, j, p, deadline, atOp-1, func(e event) {
			t.Errorf("rank %d returned a result for allreduce %d (op %d) despite the %s frame (nmse %.3g)",
				p.rank, e.Step, e.Step+1, mode, e.NMSE)
		})
		if errEv == nil {
			continue
		}
		if p.rank == receiver {
			if !errEv.BadFrame && !errEv.Protocol && !errEv.Shape {
				t.Errorf("receiver rank %d: error is not a bad frame, protocol or shape error: %s", p.rank, errEv.Err)
			}
		}
		t.Logf("rank %d: %s", p.rank, errEv.Err)
	}
	if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v hung", hung)
	}
}

// failingStep reads rank p's events until it exits (or deadline) and
// returns its last "error" event: an "init_error" fails the test, and every
// "op" event at or after wantStep (a result the rank should not have
// returned) goes to onBadOp. It reports a rank that ended without an error
// (and then returns nil) or that failed at a step other than wantStep.
func failingStep(t *testing.T, j *job, p *proc, deadline time.Time, wantStep int, onBadOp func(e event)) *event {
	t.Helper()
	var errEv *event
	for {
		e, ok := j.next(p, deadline)
		if !ok {
			break
		}
		if e.Ev == "init_error" {
			t.Fatalf("rank %d: %s", p.rank, e.Err)
		}
		if e.Ev == "op" && e.Step >= wantStep {
			onBadOp(e)
		}
		if e.Ev == "error" {
			ee := e
			errEv = &ee
		}
	}
	if errEv == nil {
		t.Errorf("rank %d ended without an error (events %+v)", p.rank, p.eventsSoFar())
		return nil
	}
	if errEv.Step != wantStep {
		t.Errorf("rank %d failed at step %d, want step %d: %s", p.rank, errEv.Step, wantStep, errEv.Err)
	}
	return errEv
}

// TestReliabilityHostileLength: rank 1 sends, in place of a 32 KiB
// reduce-scatter sub-chunk of the third allreduce, a frame whose header
// announces 128 MiB. The receiver (rank 2) must refuse it from the header,
// before allocating anything of that size (its heap grows by far less than
// the frame during that allreduce), with a bad-frame error naming rank 1;
// every rank must fail that allreduce and exit, none may hang.
func TestReliabilityHostileLength(t *testing.T) {
	const mangler, receiver, atOp, oversize = 1, 2, 3, 128 << 20
	j := startJob(t, jobSpec{
		world: 4,
		role:  "mangle",
		env: map[string]string{
			"VCCL_CODEC":       "raw",
			"RELY_STEPS":       "4",
			"RELY_ROWS":        "128",
			"RELY_COLS":        "256",
			"RELY_MANGLER":     strconv.Itoa(mangler),
			"RELY_MANGLE":      "oversize",
			"RELY_OVERSIZE":    strconv.Itoa(oversize),
			"RELY_MANGLE_OP":   strconv.Itoa(atOp),
			"RELY_MANGLE_KIND": strconv.Itoa(int(ring.KindReduceScatter)),
		},
		peerTimeout: 5 * time.Second,
	})
	deadline := time.Now().Add(40 * time.Second)
	for _, p := range j.procs {
		errEv := failingStep(t, j, p, deadline, atOp-1, func(e event) {
			t.Errorf("rank %d returned a result for allreduce %d despite the oversized frame", p.rank, e.Step)
		})
		if errEv == nil {
			continue
		}
		if !strings.Contains(errEv.Err, "exceeds") || !strings.Contains(errEv.Err, "from rank 1") {
			t.Errorf("rank %d: error does not say that the frame from rank 1 exceeds what was expected: %s", p.rank, errEv.Err)
		}
		if p.rank == receiver {
			if !errEv.BadFrame {
				t.Errorf("receiver rank %d: not a bad-frame error: %s", p.rank, errEv.Err)
			}
			if errEv.Bytes > oversize/8 {
				t.Errorf("receiver rank %d allocated %d bytes during the failed allreduce; the hostile frame announced %d", p.rank, errEv.Bytes, oversize)
			}
			t.Logf("receiver rank %d allocated %d KiB during the failed allreduce (the frame announced %d MiB)", p.rank, errEv.Bytes>>10, oversize>>20)
		}
		t.Logf("rank %d: %s", p.rank, errEv.Err)
	}
	if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v hung", hung)
	}
}
