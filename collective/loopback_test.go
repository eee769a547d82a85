package collective

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/internal/testenv"
)

// loopbackWorld starts size Comms in this process, each with its own real
// worker (memberlist and websocket links on 127.0.0.1).
func loopbackWorld(tb testing.TB, size int, mod func(*Config)) []*Comm {
	tb.Helper()
	port := testenv.FreePort(tb, "127.0.0.1")
	comms := make([]*Comm, size)
	errs := make([]error, size)
	logs := &testenv.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for r := range comms {
		cfg := DefaultConfig()
		cfg.Rank, cfg.WorldSize, cfg.Secret = r, size, []byte("loopback-secret")
		cfg.BindAddr = "127.0.0.1"
		cfg.PeerTimeout = 10 * time.Second // the worker's default; a loaded 2-core machine stalls goroutines for seconds
		cfg.JoinTimeout = 30 * time.Second
		cfg.Logger = log.New(logs, fmt.Sprintf("[vccl rank %d] ", r), log.Lmicroseconds)
		if r == 0 {
			cfg.BindPort = port
		} else {
			cfg.Join = []string{fmt.Sprintf("127.0.0.1:%d", port)}
		}
		if mod != nil {
			mod(&cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			comms[r], errs[r] = Init(ctx, cfg)
		}()
	}
	wg.Wait()
	tb.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range comms {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.Close() }()
			}
		}
		wg.Wait()
		if tb.Failed() {
			tb.Logf("worker logs:\n%s", testenv.Tail(logs.String(), 5000))
		}
	})
	for r, err := range errs {
		if err != nil {
			tb.Fatalf("rank %d: Init: %v", r, err)
		}
	}
	return comms
}

func TestLoopbackWorkersInProcess(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms := loopbackWorld(t, size, func(c *Config) { c.WarmupSteps = 1; c.Codec = lossyCodec; c.Backend = "software" })
	for r, c := range comms {
		if c.Rank() != r || c.Size() != size {
			t.Fatalf("comm %d: rank %d size %d", r, c.Rank(), c.Size())
		}
	}
	const rows, cols = 256, 256
	for step := 0; step < 3; step++ { // step 0 is warm-up: raw and exact
		seed := int64(500 + step)
		outs := make([][]float32, size)
		sts := make([]Stats, size)
		noErrors(t, each(comms, func(r int, c *Comm) error {
			x := rankSmooth(seed, r, rows, cols)
			st, err := c.AllReduce(ctx, x, WithShape(rows, cols), WithStream("w"), WithAverage())
			outs[r], sts[r] = x, st
			return err
		}))
		sameOnAllRanks(t, fmt.Sprintf("step %d", step), outs)
		e := metric.NMSE(outs[0], exactSumOf(size, func(r int) []float32 { return rankSmooth(seed, r, rows, cols) }, true))
		t.Logf("step %d: codec %s NMSE %.3g, %.3f bits/value, %v", step, sts[0].Codec, e, sts[0].BitsPerValue(), sts[0].Total)
		if step == 0 && (sts[0].Codec != "raw" || e > 1e-12) || step > 0 && (sts[0].Codec != lossyCodec || e > 0.1 || math.IsNaN(e)) {
			t.Fatalf("step %d: codec %s NMSE %g", step, sts[0].Codec, e)
		}
	}
	outs := make([][]byte, size)
	noErrors(t, each(comms, func(r int, c *Comm) error {
		b, err := c.BroadcastBytes(ctx, []byte(fmt.Sprintf("from %d", r)), 2)
		outs[r] = b
		if err == nil {
			err = c.Barrier(ctx)
		}
		return err
	}))
	for r, b := range outs {
		if string(b) != "from 2" {
			t.Fatalf("rank %d broadcast got %q", r, b)
		}
	}
}

// BenchmarkAllReduce16MiB: 4 ranks in this process over real loopback
// workers (software codecs); one op is one 16 MiB (4 Mi float32) allreduce
// of a gradient-like 2048×2048 tensor on all four ranks, after one untimed
// warm-up allreduce. bits/value is the achieved wire rate, nmse the error
// of the last result against the exact float64 sum.
//
//	go test ./collective -run '^$' -bench AllReduce16MiB -benchtime 3x
func BenchmarkAllReduce16MiB(b *testing.B) {
	for _, codec := range []string{"raw", "tensor", "h264", "hevc"} {
		b.Run(codec, func(b *testing.B) {
			if !gradcodec.Registered(codec) {
				b.Skipf("%s is not registered in this build (the video plug-in needs cgo)", codec)
			}
			const size, rows, cols = 4, 2048, 2048
			comms := loopbackWorld(b, size, func(c *Config) {
				c.Codec, c.Backend, c.WarmupSteps = codec, "software", 0
				// Four ranks' encoders share this machine's cores: keep the
				// failure detector from taking a busy rank for a dead one.
				c.PeerTimeout = time.Minute
			})
			ctx := context.Background()
			data := make([][]float32, size)
			for r := range data {
				data[r] = rankSmooth(9, r, rows, cols)
			}
			bufs := make([][]float32, size)
			for r := range bufs {
				bufs[r] = make([]float32, rows*cols)
			}
			// One untimed allreduce first: it opens the encoders of every
			// stream (x265's take seconds to open) and settles rate control.
			noErrorsB(b, each(comms, func(r int, c *Comm) error {
				copy(bufs[r], data[r])
				_, err := c.AllReduce(ctx, bufs[r], WithShape(rows, cols), WithStream("bench"))
				return err
			}))
			var mu sync.Mutex
			var total Stats
			b.SetBytes(4 * rows * cols)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for r := range bufs {
					copy(bufs[r], data[r])
				}
				b.StartTimer()
				noErrorsB(b, each(comms, func(r int, c *Comm) error {
					st, err := c.AllReduce(ctx, bufs[r], WithShape(rows, cols), WithStream("bench"))
					if r == 0 {
						mu.Lock()
						total = total.Add(st)
						mu.Unlock()
					}
					return err
				}))
			}
			b.StopTimer()
			b.ReportMetric(total.BitsPerValue(), "bits/value")
			b.ReportMetric(float64(total.EncodeTime.Milliseconds())/float64(b.N), "enc-ms/op")
			b.ReportMetric(float64(total.DecodeTime.Milliseconds())/float64(b.N), "dec-ms/op")
			e := metric.NMSE(bufs[0], exactSumOf(size, func(r int) []float32 { return data[r] }, false))
			b.ReportMetric(e, "nmse")
		})
	}
}

func noErrorsB(b *testing.B, errs []error) {
	b.Helper()
	for r, err := range errs {
		if err != nil {
			b.Fatalf("rank %d: %v", r, err)
		}
	}
}

// TestLocalErrorReachesPeers: an argument error on one rank only (the ring
// never starts there) must not leave the others waiting: that rank closes
// its links and every other rank fails naming it, within the peer timeout.
func TestLocalErrorReachesPeers(t *testing.T) {
	ctx := context.Background()
	const size, bad = 4, 1
	const peerTimeout = 4 * time.Second
	comms := loopbackWorld(t, size, func(c *Config) { c.Codec = "raw"; c.PeerTimeout = peerTimeout })
	start := time.Now()
	errs := each(comms, func(r int, c *Comm) error {
		opts := []Option{WithShape(10, 100)}
		if r == bad {
			opts = []Option{WithShape(10, 99)} // does not cover the data
		}
		_, err := c.AllReduce(ctx, make([]float32, 1000), opts...)
		return err
	})
	took := time.Since(start)
	for r, err := range errs {
		t.Logf("rank %d: %v", r, err)
		if r == bad {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("rank %d: %v, want ErrInvalidArgument", r, err)
			}
			continue
		}
		var pl *PeerLostError
		if !errors.As(err, &pl) || pl.Rank != bad {
			t.Errorf("rank %d: %v, want a lost peer naming rank %d", r, err, bad)
		}
	}
	if bound := peerTimeout + 5*time.Second; took > bound {
		t.Errorf("the ranks took %v to fail, bound %v", took, bound)
	}
}
