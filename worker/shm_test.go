package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// testShmPair is a sending and a receiving end over one region in Go
// memory (the ring logic without a memfd).
func testShmPair(size int) (*shmTx, *shmRx, *bool) {
	unmapped := new(bool)
	r := newShmRegion(make([]byte, shmCtrl+size), func() error { *unmapped = true; return nil })
	return &shmTx{r: r}, &shmRx{r: r}, unmapped
}

func TestShmRingPositions(t *testing.T) {
	const size = 1 << 18 // payloads up to 64 KiB
	const q = size / 4
	tx, rx, unmapped := testShmPair(size)
	payload := func(n int, seed byte) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = seed + byte(i*7)
		}
		return p
	}
	send := func(n int, seed byte) (uint64, bool) { return tx.put(payload(n, seed)) }
	take := func(pos uint64, n int, seed byte) []byte {
		t.Helper()
		p, err := rx.take(pos, n)
		if err != nil {
			t.Fatalf("take(%d, %d): %v", pos, n, err)
		}
		if want := payload(n, seed); string(p) != string(want) || cap(p) != n {
			t.Fatalf("take(%d, %d): payload or capacity (%d) differs", pos, n, cap(p))
		}
		return p
	}
	// Three payloads fill three quarters (with alignment); a fourth
	// quarter fits, then nothing until the first is released.
	var got [][]byte
	for i, n := range []int{q, q - 3, q} {
		pos, ok := send(n, byte(i))
		if !ok {
			t.Fatalf("payload %d did not fit an empty ring", i)
		}
		if pos%shmAlign != 0 {
			t.Fatalf("payload %d at unaligned position %d", i, pos)
		}
		got = append(got, take(pos, n, byte(i)))
	}
	if _, ok := send(q+1, 9); ok {
		t.Fatal("a payload over a quarter of the ring went to shared memory")
	}
	if _, ok := send(q, 9); !ok {
		t.Fatal("the fourth quarter did not fit")
	}
	take(3*q, q, 9)
	if _, ok := send(shmMinPayload, 9); ok {
		t.Fatal("a payload went into a full ring")
	}
	// Released out of order: nothing is free until the first is.
	rx.release(got[1])
	if r := rx.r.released.Load(); r != 0 {
		t.Fatalf("released %d after releasing the second payload only, want 0", r)
	}
	if _, ok := send(shmMinPayload, 9); ok {
		t.Fatal("a payload overwrote an unreleased one")
	}
	rx.release(got[0])
	if r := rx.r.released.Load(); r != 2*q {
		t.Fatalf("released %d after the first two, want %d", r, 2*q)
	}
	// The next payload wraps to the start of the ring (second lap).
	pos, ok := send(40000, 5)
	if !ok || pos != size {
		t.Fatalf("wrapped payload at %d (%v), want %d", pos, ok, size)
	}
	// The receiver refuses any other position than the sender's.
	if _, err := rx.take(pos+shmAlign, 40000); err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("take at a wrong position: %v", err)
	}
	// Sizes an honest sender never puts there.
	for _, n := range []int{0, shmMinPayload - 1, q + 1} {
		if _, err := rx.take(pos, n); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Fatalf("take of %d bytes: %v", n, err)
		}
	}
	take(pos, 40000, 5)
	next := pos + shmAligned(40000)
	if _, err := rx.take(next, q); err != nil {
		t.Fatalf("take of the last quarter that fits: %v", err)
	}
	// A position that would overwrite what the receiver still holds.
	if _, err := rx.take(next+q, q); err == nil || !strings.Contains(err.Error(), "overwrites") {
		t.Fatalf("take over unreleased data: %v", err)
	}
	if rx.release(make([]byte, 10)) {
		t.Fatal("release claimed memory outside the ring")
	}
	// Closed with payloads out: unmapped only once the last is released.
	rx.close()
	if *unmapped {
		t.Fatal("unmapped while payloads were out")
	}
	rx.mu.Lock()
	out := make([]shmEntry, len(rx.out))
	copy(out, rx.out)
	rx.mu.Unlock()
	for _, e := range out {
		p := rx.r.data[e.start%size : e.start%size+1]
		rx.release(p)
	}
	if !*unmapped {
		t.Fatal("not unmapped after the last payload was released")
	}
}

func TestShmOfferChecks(t *testing.T) {
	o, err := newShmOffer(256 << 10)
	if err != nil {
		t.Skipf("no memfd here: %v", err)
	}
	defer o.drop()
	r, err := openShmOffer(o.text)
	if err != nil {
		t.Fatalf("open own offer: %v", err)
	}
	// Both mappings are the same memory.
	r.data[12345] = 42
	if o.region.data[12345] != 42 {
		t.Fatal("the two mappings do not share memory")
	}
	r.unmap()
	f := strings.Fields(o.text)
	with := func(i int, v string) string {
		g := append([]string(nil), f...)
		g[i] = v
		return strings.Join(g, " ")
	}
	for _, tc := range []struct {
		name, offer string
		want        error
		text        string
	}{
		{"other host", with(0, "another-boot/net:[1]/pid:[2]"), errShmElsewhere, ""},
		{"malformed", "1 2 3", nil, "malformed"},
		{"wrong token", with(4, strings.Repeat("ab", 16)), nil, "token"},
		{"wrong size", with(3, fmt.Sprint(512<<10)), nil, "bytes"},
		{"no such fd", with(2, "99999"), nil, "open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := openShmOffer(tc.offer)
			if err == nil {
				r.unmap()
				t.Fatal("offer accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) || tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want %v / %q", err, tc.want, tc.text)
			}
		})
	}
}

// TestShmLink: between ranks of one host, payloads of 16 KiB and more go
// through shared memory (counted), smaller ones and those that do not fit
// over the socket, all delivered intact and in order; with SharedMemBytes
// negative nothing goes through shared memory.
func TestShmLink(t *testing.T) {
	sizes := []int{100, 16 << 10, 1 << 20, 5000, 3 << 20, 64 << 10}
	for _, tc := range []struct {
		name string
		shm  int
		want bool
	}{{"on", 0, true}, {"off", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ws, _ := mustWorld(t, 2, func(r int, c *Config) { c.SharedMemBytes = tc.shm })
			if got := ws[0].next.tx != nil; got != tc.want {
				t.Fatalf("rank 0 sends through shared memory: %v, want %v", got, tc.want)
			}
			ctx := context.Background()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for op, n := range sizes {
					if err := ws[0].Next().Send(ctx, testMsg(0, uint64(op), n)); err != nil {
						t.Errorf("send %d: %v", op, err)
						return
					}
				}
			}()
			// Hold every payload until the end (they fit the ring).
			var held []ring.Message
			for op, n := range sizes {
				m, err := ws[1].Prev().(ring.LimitedLink).RecvLimit(ctx, 4<<20)
				if err != nil {
					t.Fatalf("recv %d: %v", op, err)
				}
				if err := checkMsg(m, 0, uint64(op), n); err != nil {
					t.Fatalf("message %d: %v", op, err)
				}
				held = append(held, m)
			}
			wg.Wait()
			shm := ws[0].Metrics().LinkShmFrames.Load()
			want := int64(0)
			if tc.want {
				want = 4 // 16 KiB, 1 MiB, 3 MiB, 64 KiB — all fit the 32 MiB ring
			}
			if shm != want {
				t.Fatalf("%d frames through shared memory, want %d", shm, want)
			}
			for _, m := range held {
				ws[1].Prev().(ring.Recycler).Recycle(m.Payload)
			}
			if tc.want {
				rx := ws[1].prev.rx
				rx.mu.Lock()
				h := rx.head
				rx.mu.Unlock()
				if r := rx.r.released.Load(); r != h {
					t.Fatalf("released %d after recycling everything, want %d", r, h)
				}
			}
		})
	}
}

// TestShmLinkFullRingFallsBack: a receiver that holds payloads makes its
// sender use the socket instead of waiting for space.
func TestShmLinkFullRingFallsBack(t *testing.T) {
	ws, _ := mustWorld(t, 2, func(r int, c *Config) { c.SharedMemBytes = 1 << 20 })
	ctx := context.Background()
	const n, count = 200 << 10, 10 // 2 MB through a 1 MiB ring
	go func() {
		for op := range count {
			if err := ws[0].Next().Send(ctx, testMsg(0, uint64(op), n)); err != nil {
				t.Errorf("send %d: %v", op, err)
				return
			}
		}
	}()
	var held [][]byte
	for op := range count {
		m, err := ws[1].Prev().Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", op, err)
		}
		if err := checkMsg(m, 0, uint64(op), n); err != nil {
			t.Fatalf("message %d: %v", op, err)
		}
		held = append(held, m.Payload)
	}
	if got := ws[0].Metrics().LinkShmFrames.Load(); got < 3 || got >= count {
		t.Fatalf("%d of %d frames through shared memory, want some but not all", got, count)
	}
}

// sendForgedShm sends a frame whose header says its payload (m's, of
// length n) lies in shared memory at pos.
func sendForgedShm(t *testing.T, l *link, m ring.Message, pos uint64, tail []byte) {
	t.Helper()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	f := make([]byte, frameHeaderSize, frameHeaderSize+16)
	putHeader(f, l.w.keys.job, m, l.seq, payloadSum(m), flagShm)
	f = binary.LittleEndian.AppendUint64(f, pos)
	f = append(f, tail...)
	if err := l.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
		t.Fatalf("forged frame not sent: %v", err)
	}
	l.seq++
}

func TestShmBadFramesRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		shm  int
		pos  uint64
		tail []byte
		want string
	}{
		{"no shared memory on the link", -1, 0, nil, "has none"},
		{"wrong position", 0, 4096, nil, "expected 0"},
		{"trailing bytes", 0, 0, []byte{1}, "after the"},
		{"bad flags", 0, 0, nil, "flags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, logs := mustWorld(t, 2, func(r int, c *Config) { c.SharedMemBytes = tc.shm })
			ctx := context.Background()
			m := testMsg(0, 0, 64<<10)
			if tc.name == "bad flags" {
				l := ws[0].next
				l.wmu.Lock()
				f := make([]byte, frameHeaderSize)
				putHeader(f, l.w.keys.job, m, l.seq, payloadSum(m), 0x82)
				f = append(f, m.Payload...)
				if err := l.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
					t.Fatal(err)
				}
				l.seq++
				l.wmu.Unlock()
			} else {
				sendForgedShm(t, ws[0].next, m, tc.pos, tc.tail)
			}
			_, err := ws[1].Prev().Recv(ctx)
			if !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rank 0") {
				t.Fatalf("Recv: %v, want a bad frame error naming rank 0 and %q", err, tc.want)
			}
			if !strings.Contains(logs.String(), "rejected a frame from rank 0") {
				t.Errorf("rejection not logged:\n%s", logs)
			}
		})
	}
}

// TestShmRingGetsEveryPayloadBack: byte collectives over real links
// (AllGather's last hop and Broadcast's last rank keep pieces that no send
// forwards) hand every shared-memory payload back, so the ring never
// fills up and every large piece keeps going through shared memory.
func TestShmRingGetsEveryPayloadBack(t *testing.T) {
	const size, ops, n = 3, 6, 100 << 10
	ws, _ := mustWorld(t, size, func(r int, c *Config) { c.SharedMemBytes = 1 << 20 })
	rings := make([]*ring.Ring, size)
	for r, w := range ws {
		rings[r] = &ring.Ring{Rank: r, Size: size, Next: w.Next(), Prev: w.Prev()}
	}
	for op := uint64(1); op <= 2*ops; op++ {
		var wg sync.WaitGroup
		for r := range size {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := testMsg(r, op, n).Payload
				if op%2 == 0 {
					got, err := rings[r].Broadcast(context.Background(), op, local, 1)
					if err != nil || string(got) != string(testMsg(1, op, n).Payload) {
						t.Errorf("rank %d: broadcast %d: %v (or wrong bytes)", r, op, err)
					}
					return
				}
				out, err := rings[r].AllGather(context.Background(), op, local)
				if err != nil {
					t.Errorf("rank %d: allgather %d: %v", r, op, err)
					return
				}
				for o, b := range out {
					if string(b) != string(testMsg(o, op, n).Payload) {
						t.Errorf("rank %d: allgather %d: rank %d's bytes differ", r, op, o)
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	var frames int64
	for r, w := range ws {
		frames += w.Metrics().LinkShmFrames.Load()
		rx := w.prev.rx
		rx.mu.Lock()
		head, out := rx.head, len(rx.out)
		rx.mu.Unlock()
		if rel := rx.r.released.Load(); rel != head || out != 0 {
			t.Errorf("rank %d: %d payloads still out, released %d of %d", r, out, rel, head)
		}
	}
	// Every piece: per AllGather 2 hops x 3 ranks, per Broadcast 2 links.
	if want := int64(ops * (2*size + 2)); frames != want {
		t.Errorf("%d pieces went through shared memory, want all %d", frames, want)
	}
}

// TestShmNewLapWhenIdle: a payload sent when the receiver has released
// everything starts at offset 0 again (warm memory); the receiver accepts
// that only with nothing out, and also accepts the plain next position
// (a sender that has not seen the last release yet).
func TestShmNewLapWhenIdle(t *testing.T) {
	const size = 1 << 18
	tx, rx, _ := testShmPair(size)
	p := make([]byte, 20000)
	pos, _ := tx.put(p)
	a, err := rx.take(pos, len(p))
	if err != nil || pos != 0 {
		t.Fatalf("first payload at %d: %v", pos, err)
	}
	rx.release(a)
	pos, ok := tx.put(p)
	if !ok || pos != size {
		t.Fatalf("payload after everything was released at %d (%v), want the next lap's start %d", pos, ok, size)
	}
	b, err := rx.take(pos, len(p))
	if err != nil {
		t.Fatalf("take at the new lap: %v", err)
	}
	// With b out, the next one follows it; a new lap is refused.
	pos, ok = tx.put(p)
	if want := uint64(size) + shmAligned(len(p)); !ok || pos != want {
		t.Fatalf("payload while one is out at %d (%v), want %d", pos, ok, want)
	}
	if _, err := rx.take(2*size, len(p)); err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("a new lap while a payload is out: %v", err)
	}
	c, err := rx.take(pos, len(p))
	if err != nil {
		t.Fatal(err)
	}
	rx.release(b)
	rx.release(c)
	// A sender that missed the last release sends at the plain next
	// position: also fine.
	if _, err := rx.take(rx.head, len(p)); err != nil {
		t.Fatalf("plain next position with nothing out: %v", err)
	}
}
