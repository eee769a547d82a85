package worker

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// splitSend writes one frame in two parts: the first cut bytes at once,
// the rest once rest is closed; done gets the outcome. It holds the
// link's write lock throughout, so close rest before the link closes.
type splitSend struct {
	rest chan struct{}
	done chan error
}

func sendSplit(t *testing.T, l *link, m ring.Message, cut int) *splitSend {
	s := &splitSend{rest: make(chan struct{}), done: make(chan error, 1)}
	t.Cleanup(func() {
		select {
		case <-s.rest:
		default:
			close(s.rest)
		}
	})
	go func() {
		l.wmu.Lock()
		defer l.wmu.Unlock()
		f := appendFrame(nil, l.w.keys.job, m, l.seq)
		w, err := l.ws.NextWriter(websocket.BinaryMessage)
		if err == nil {
			_, err = w.Write(f[:cut]) // over twice gorilla's buffer: sent at once as a fragment
		}
		if err == nil {
			<-s.rest
			_, err = w.Write(f[cut:])
		}
		if err == nil {
			err = w.Close()
		}
		if err == nil {
			l.seq++
		}
		s.done <- err
	}()
	return s
}

func (s *splitSend) finish() { close(s.rest) }

func sameMemory(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && unsafe.Pointer(&a[0]) == unsafe.Pointer(&b[0])
}

// TestRecvPlace: RecvPlace receives a frame's payload into the memory
// place names for its header (and checks it there), or into a buffer of
// the link's when place declines or names memory of another length.
func TestRecvPlace(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	ctx := context.Background()
	prev := ws[1].prev
	send := func(m ring.Message) {
		t.Helper()
		if err := ws[0].Next().Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	send(testMsg(0, 0, 5000))
	dst := make([]byte, 5000)
	var seen ring.Message
	seenN := -1
	m, err := prev.RecvPlace(ctx, 1<<20, func(h ring.Message, n int) []byte { seen, seenN = h, n; return dst })
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMsg(m, 0, 0, 5000); err != nil {
		t.Fatal(err)
	}
	if !sameMemory(m.Payload, dst) {
		t.Error("payload not received into the placed memory")
	}
	if want := headerOf(testMsg(0, 0, 5000)); seenN != 5000 || seen.Payload != nil || seen.Op != want.Op || seen.Kind != want.Kind ||
		seen.Hop != want.Hop || seen.Chunk != want.Chunk || seen.Sub != want.Sub || seen.Total != want.Total || seen.Sum == 0 {
		t.Errorf("place saw %+v and %d bytes, want %+v with its Sum and 5000", seen, seenN, want)
	}

	// Declined, or memory of another length: a buffer of the link's.
	for i, place := range []func(ring.Message, int) []byte{
		func(ring.Message, int) []byte { return nil },
		func(ring.Message, int) []byte { return dst[:10] },
	} {
		send(testMsg(0, uint64(1+i), 3000))
		m, err := prev.RecvPlace(ctx, 1<<20, place)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMsg(m, 0, uint64(1+i), 3000); err != nil {
			t.Fatal(err)
		}
		if sameMemory(m.Payload, dst) {
			t.Errorf("case %d: payload in memory place did not give", i)
		}
	}

	// A corrupted payload is caught in placed memory too. (A bound below
	// its length first, so the frame is not read ahead into a buffer.)
	send(testMsg(0, 3, 100))
	if _, err := prev.RecvLimit(ctx, 100); err != nil {
		t.Fatal(err)
	}
	sendForged(t, ws[0].next, testMsg(0, 4, 5000), func(f []byte) []byte { f[len(f)-1] ^= 1; return f })
	placed := false
	_, err = prev.RecvPlace(ctx, 1<<20, func(ring.Message, int) []byte { placed = true; return dst })
	if !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("RecvPlace of a corrupted frame: %v, want a bad frame", err)
	}
	if !placed {
		t.Error("the corrupted frame was not received in place")
	}
}

// TestRecvPlaceAbandoned: a RecvPlace that gives up while its frame is
// arriving in placed memory returns only once the frame is complete, and
// the next Recv gets that frame, whole and in memory of the link's; the
// placed memory is not written after RecvPlace returned.
func TestRecvPlaceAbandoned(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	prev := ws[1].prev
	const n = 1 << 20
	m := testMsg(0, 1, n)
	s := sendSplit(t, ws[0].next, m, 300<<10)
	dst := make([]byte, n)
	ctx, cancel := context.WithCancel(context.Background())
	called := make(chan struct{})
	gaveUp := make(chan struct{})
	prev.onAbandon = func() { close(gaveUp) }
	done := make(chan error, 1)
	go func() {
		_, err := prev.RecvPlace(ctx, 2*n, func(ring.Message, int) []byte { close(called); return dst })
		done <- err
	}()
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not offer the frame to RecvPlace's place within 10s")
	}
	cancel()
	select { // else the frame may complete first, and RecvPlace returns it
	case <-gaveUp:
	case <-time.After(10 * time.Second):
		t.Fatal("RecvPlace did not give up within 10s of its context ending")
	}
	s.finish() // the frame completes within the grace
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvPlace: %v, want context.Canceled", err)
	}
	snap := append([]byte(nil), dst...)
	got, err := prev.Recv(context.Background())
	if err != nil {
		t.Fatalf("Recv after the abandoned RecvPlace: %v", err)
	}
	if err := checkMsg(got, 0, 1, n); err != nil {
		t.Fatal(err)
	}
	if sameMemory(got.Payload, dst) {
		t.Error("the next Recv got the abandoned RecvPlace's memory")
	}
	if !bytes.Equal(dst, snap) {
		t.Error("placed memory changed after RecvPlace returned")
	}
	if err := <-s.done; err != nil {
		t.Fatal(err)
	}
}

// TestRecvPlaceBrokenOff: a RecvPlace that gives up while a stalled peer
// is halfway through its frame breaks the read off after the grace and
// returns; nothing is written into the placed memory afterwards, and the
// link is given up.
func TestRecvPlaceBrokenOff(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	prev := ws[1].prev
	const n = 1 << 20
	sendSplit(t, ws[0].next, testMsg(0, 1, n), 300<<10) // the rest never comes
	dst := make([]byte, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	active := make(chan struct{})
	prev.onPlaced = func() { close(active) } // read by the reader after RecvPlace hands it the request
	go func() {
		_, err := prev.RecvPlace(ctx, 2*n, func(ring.Message, int) []byte { return dst })
		done <- err
	}()
	select {
	case <-active: // the reader receives into dst (and the rest never comes)
	case <-time.After(10 * time.Second):
		t.Fatal("the frame did not start arriving in placed memory within 10s")
	}
	cancel()
	t0 := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RecvPlace: %v, want context.Canceled", err)
		}
		t.Logf("RecvPlace returned %v after the cancel", time.Since(t0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("RecvPlace still waiting 10s after its context ended")
	}
	select {
	case <-prev.rdone:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader still runs 10s after the read was broken off")
	}
	if _, err := prev.Recv(context.Background()); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("Recv after the break-off: %v, want the link given up", err)
	}
}

// TestStaleAnswerInOrder: the frame read for a Recv that gave up goes to
// the next Recv before a frame read ahead after it, and must meet the next
// Recv's bound.
func TestStaleAnswerInOrder(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	prev := ws[1].prev
	ctx := context.Background()
	const n = 1 << 20
	abandon := func(op uint64) *splitSend {
		t.Helper()
		// No bound to read ahead under: the reader waits for the
		// RecvPlace below and calls its place (a frame read ahead would
		// never be offered to place).
		prev.mu.Lock()
		prev.lastMax = 0
		prev.mu.Unlock()
		s := sendSplit(t, ws[0].next, testMsg(0, op, n), 300<<10)
		rctx, cancel := context.WithCancel(ctx)
		taken := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			// place declines: the reader has taken the request when it is called.
			_, err := prev.RecvPlace(rctx, 2*n, func(ring.Message, int) []byte { close(taken); return nil })
			done <- err
		}()
		select {
		case <-taken:
		case <-time.After(10 * time.Second):
			t.Fatal("the reader did not offer the frame to RecvPlace's place within 10s")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("RecvPlace: %v, want context.Canceled", err)
		}
		return s
	}

	s := abandon(1)
	next := make(chan ring.Message, 1)
	go func() {
		m, err := prev.RecvLimit(ctx, 2*n)
		if err != nil {
			t.Error(err)
		}
		next <- m
	}()
	time.Sleep(50 * time.Millisecond) // lets that Recv wait first (where the old code lost the order)
	s.finish()
	if err := ws[0].Next().Send(ctx, testMsg(0, 2, 100)); err != nil { // read ahead behind it
		t.Fatal(err)
	}
	if err := checkMsg(<-next, 0, 1, n); err != nil {
		t.Fatalf("first Recv after the abandoned one: %v", err)
	}
	m, err := prev.RecvLimit(ctx, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMsg(m, 0, 2, 100); err != nil {
		t.Fatalf("second Recv: %v", err)
	}

	// An abandoned frame over the next Recv's bound is refused.
	s = abandon(3)
	s.finish()
	if _, err := prev.RecvLimit(ctx, 1000); !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "exceeds the 1000 bytes") {
		t.Fatalf("RecvLimit(1000) after an abandoned %d-byte frame: %v, want a bad frame", n, err)
	}
}

// TestLateBreakOff: a write whose context ends is broken off only while
// it is in progress; a break-off that comes after the write ended (or
// during a later write) leaves the connection's deadline alone (it could
// fail a ping, and gorilla keeps a failed write's error for every later
// write).
func TestLateBreakOff(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	l := ws[0].next
	ctx := context.Background()
	if err := ws[0].Next().Send(ctx, testMsg(0, 0, 100)); err != nil {
		t.Fatal(err)
	}
	l.bmu.Lock()
	gen := l.wgen // the write that just ended
	l.bmu.Unlock()
	l.wmu.Lock()
	l.stopWrite(gen, 0) // as the context.AfterFunc of that write runs when its context ends late
	l.breakOff(gen)
	l.bmu.Lock()
	l.writing, l.wgen = true, gen+1 // a later write in progress...
	l.bmu.Unlock()
	l.breakOff(gen) // ...is not the one to break off
	l.bmu.Lock()
	l.writing, l.wgen = false, gen
	l.bmu.Unlock()
	_, err := l.ws.NetConn().Write(nil)
	l.wmu.Unlock()
	if err != nil {
		t.Fatalf("the connection's write deadline was set after the write ended: %v", err)
	}
	if l.interrupted.Load() {
		t.Fatal("a write that was not in progress is marked interrupted")
	}
	if err := ws[0].Next().Send(ctx, testMsg(0, 1, 100)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		m, err := ws[1].Prev().Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMsg(m, 0, uint64(i), 100); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecvPlaceGivesUpAtCompletion: a RecvPlace whose context ends just
// after its frame was completed and checked in placed memory (but before
// the reader handed it over) returns that frame itself; the next Recv must
// never get the caller's memory (it could recycle it into the link's
// buffers, and the link would write there later).
func TestRecvPlaceGivesUpAtCompletion(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	prev := ws[1].prev
	const n = 64 << 10
	send := func(seq uint64) {
		t.Helper()
		if err := ws[0].Next().Send(context.Background(), testMsg(0, seq, n)); err != nil {
			t.Fatal(err)
		}
	}
	dst := make([]byte, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Between unplace and the answer: end the context and wait until the
	// RecvPlace has given up (abandoned), so it cannot take the answer
	// from its first select.
	prev.onUnplaced = func(st *placeState) {
		cancel()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			st.mu.Lock()
			gaveUp := st.abandoned
			st.mu.Unlock()
			if gaveUp {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Error("RecvPlace did not give up within 10s of its context ending")
	}
	send(1)
	m, err := prev.RecvPlace(ctx, 2*n, func(ring.Message, int) []byte { return dst })
	prev.onUnplaced = nil
	if err != nil {
		t.Fatalf("RecvPlace whose frame was complete before it gave up: %v, want the frame", err)
	}
	if err := checkMsg(m, 0, 1, n); err != nil {
		t.Fatal(err)
	}
	if !sameMemory(m.Payload, dst) {
		t.Error("the frame is not in the placed memory")
	}
	send(2)
	got, err := prev.Recv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sameMemory(got.Payload, dst) {
		t.Fatal("the next Recv got the RecvPlace caller's memory")
	}
	if err := checkMsg(got, 0, 2, n); err != nil {
		t.Fatal(err)
	}
}

// TestBufferReusesLastRecycled: of recycled buffers that fit, the link
// hands out the smallest, and of equal ones the last recycled (the one
// likeliest still in the cache), so that steady state cycles through as
// few buffers as it needs.
func TestBufferReusesLastRecycled(t *testing.T) {
	l := &link{}
	const n = 1 << 20
	a, b, c, big := make([]byte, n), make([]byte, n), make([]byte, n), make([]byte, 2*n)
	for _, p := range [][]byte{a, big, b, c} {
		l.Recycle(p)
	}
	same := func(x, y []byte) bool { return &x[:1][0] == &y[:1][0] }
	for i, want := range [][]byte{c, b, a, big} {
		if got := l.buffer(n - 100); !same(got, want) || len(got) != n-100 {
			t.Fatalf("buffer %d: got the buffer at %p (len %d), want the one at %p", i, &got[:1][0], len(got), &want[0])
		}
	}
	l.Recycle(a)
	l.Recycle(b)
	if got := l.buffer(n); !same(got, b) {
		t.Errorf("after recycling a then b: got %p, want b at %p", &got[:1][0], &b[0])
	}
	// Taking a buffer from the middle keeps the others in recycling order.
	l.buffer(n) // a
	for _, p := range [][]byte{a, big, b, c} {
		l.Recycle(p)
	}
	l.buffer(2 * n) // big, from the middle
	if got := l.buffer(n); !same(got, c) {
		t.Errorf("after taking a middle buffer: got %p, want the last recycled, c at %p", &got[:1][0], &c[0])
	}
}
