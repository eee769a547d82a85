package worker

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
)

// Test timings: short enough to keep the suite fast, long enough for a
// loaded two-core machine.
const (
	// The race detector slows everything several times over.
	testPeerTimeout = (3 + 3*raceScale) * time.Second
	testJoinTimeout = 20 * time.Second
)

var testSecret = []byte("worker-test-secret-0123456789abcdef")

// testConfig is rank r of a world of size whose seed listens on port.
func testConfig(r, size, port int, logs *testenv.SyncBuffer) Config {
	c := Config{
		Rank: r, WorldSize: size, Secret: testSecret,
		BindAddr:    "127.0.0.1",
		PeerTimeout: testPeerTimeout,
		JoinTimeout: testJoinTimeout,
		Logger:      log.New(logs, fmt.Sprintf("[rank %d] ", r), log.Lmicroseconds),
	}
	if r == 0 {
		c.BindPort = port
	} else {
		c.Join = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	}
	return c
}

// startWorld starts size workers in this process concurrently. mod may
// change each rank's Config. It returns the workers (nil where Start
// failed), Start's errors, and the shared log. The workers are closed when
// the test ends.
func startWorld(tb testing.TB, size int, mod func(r int, c *Config)) ([]*Worker, []error, *testenv.SyncBuffer) {
	tb.Helper()
	logs := &testenv.SyncBuffer{}
	port := testenv.FreePort(tb, "127.0.0.1")
	ws := make([]*Worker, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for r := range size {
		cfg := testConfig(r, size, port, logs)
		if mod != nil {
			mod(r, &cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[r], errs[r] = Start(context.Background(), cfg)
		}()
	}
	wg.Wait()
	tb.Cleanup(func() {
		closeAll(ws)
		if tb.Failed() {
			tb.Logf("worker logs:\n%s", logs)
		}
	})
	return ws, errs, logs
}

// mustWorld is startWorld that fails the test when any Start fails.
func mustWorld(tb testing.TB, size int, mod func(r int, c *Config)) ([]*Worker, *testenv.SyncBuffer) {
	tb.Helper()
	ws, errs, logs := startWorld(tb, size, mod)
	for r, err := range errs {
		if err != nil {
			tb.Fatalf("rank %d: Start: %v", r, err)
		}
	}
	return ws, logs
}

func closeAll(ws []*Worker) {
	var wg sync.WaitGroup
	for _, w := range ws {
		if w != nil {
			wg.Add(1)
			go func() { defer wg.Done(); w.Close() }()
		}
	}
	wg.Wait()
}

// testMsg is the op-th message rank r sends, with a payload of n bytes.
func testMsg(r int, op uint64, n int) ring.Message {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r*31 + int(op)*7 + i*13)
	}
	return ring.Message{Op: op, Kind: ring.KindBytes, Hop: uint32(r), Chunk: uint32(op) + 1, Sub: uint32(n), Total: uint64(n) * 3, Payload: p}
}

// checkMsg reports how m differs from testMsg(r, op, n).
func checkMsg(m ring.Message, r int, op uint64, n int) error {
	want := testMsg(r, op, n)
	if m.Op != want.Op || m.Kind != want.Kind || m.Hop != want.Hop || m.Chunk != want.Chunk || m.Sub != want.Sub || m.Total != want.Total {
		return fmt.Errorf("header %+v, want %+v", headerOf(m), headerOf(want))
	}
	if !bytes.Equal(m.Payload, want.Payload) {
		return fmt.Errorf("payload of %d bytes differs from the %d sent", len(m.Payload), len(want.Payload))
	}
	return nil
}

func headerOf(m ring.Message) ring.Message { m.Payload = nil; return m }
