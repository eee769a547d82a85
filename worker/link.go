package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
	"github.com/vccl/vccl/ring"
)

// ErrClosed is returned by Send and Recv after Close.
var ErrClosed = errors.New("worker: closed")

const (
	// ioChunk is the granularity at which frame reads extend their read
	// deadline, so a large frame on a slow link is not mistaken for a stall
	// while it makes progress.
	ioChunk = 1 << 20
	// crcPiece is the most a payload read asks for: its bytes are
	// checksummed right after the read, while they are in the L2 cache.
	crcPiece = 128 << 10
	// maxFree is how many received payload buffers a link keeps for reuse.
	maxFree = 12 // the reader, readAhead, the ring's pump and controller hold up to 9
	// readAhead is how many frames the reader may read before Recv asks.
	readAhead = 2
	// writeTail is the part of a large payload that goes through the
	// websocket write buffer, so the final fragment carries data and a
	// message costs two writes (header and bulk in one writev, then the
	// tail) rather than three.
	writeTail = 16 << 10
	// interruptGrace is how long a write may go on after its context ended
	// before it is broken off.
	interruptGrace = 500 * time.Millisecond
)

// link is one websocket connection between ring neighbours. The rank that
// sends data is the websocket server: it accepted the connection its
// successor dialled, so its data frames are unmasked and gorilla/websocket
// writes payloads straight from the caller's memory. One link object serves
// both directions (ring.Link): Send writes a frame synchronously from the
// calling goroutine; a reader goroutine reads the connection (a ping or
// pong only feeds its read deadline, nothing is answered) and reads a data
// frame's payload when Recv asks for one, or up to readAhead frames early,
// into a buffer bounded by what Recv expects or into memory RecvPlace
// names; a pinger keeps the peer's read deadline fed.
type link struct {
	w    *Worker
	peer int    // rank at the other end
	name string // "next" or "prev", for errors
	ws   *websocket.Conn
	// Shared memory with a same-host peer (shm.go): the sending end on
	// the link a rank sends data on, the receiving end on the one it
	// receives on; nil for a socket-only link.
	tx *shmTx // guarded by wmu
	rx *shmRx

	// send side
	wmu         sync.Mutex // serialises Send
	seq         uint64     // next sequence number to send (guarded by wmu)
	whdr        [frameHeaderSize]byte
	wpos        [8]byte           // a shared-memory payload's stream position
	interrupted atomic.Bool       // a write was broken off (its ctx ended, or the link shut down)
	rbroken     atomic.Bool       // a RecvPlace that gave up broke a read off
	onPlaced    func()            // tests: called when a payload starts arriving in placed memory
	onUnplaced  func(*placeState) // tests: called between unplace and the answer of a placed frame
	onAbandon   func()            // tests: called when a RecvPlace has given up, before it waits for the reader
	bmu         sync.Mutex        // orders breakOff with the start and end of a write
	writing     bool              // a data write is in progress (guarded by bmu)
	wgen        uint64            // number of the current or last data write (guarded by bmu)
	wend        chan struct{}     // closed when write wgen ends; made by whoever waits for it (guarded by bmu)
	wstop       bool              // shutdown: no data write starts any more (guarded by bmu)

	// receive side: Recv hands the reader its request (a bound, maybe
	// memory to receive into) on want, the reader answers on got (capacity
	// 1: an answer Recv gave up on waits for the next Recv, which takes it
	// before any frame read ahead).
	want chan recvReq
	got  chan recvResult
	hdr  [frameHeaderSize]byte // reader only
	// The reader may read up to readAhead frames ahead of Recv, each no
	// larger than the bound of the last RecvLimit that returned (lastMax,
	// guarded by mu; 0 after a Recv without a real bound), so it keeps
	// noticing a dead peer while this rank is busy; beyond that it waits
	// (backpressure).
	ahead   []ring.Message
	lastMax int
	notify  chan struct{} // capacity 1: a frame was queued ahead
	drained chan struct{} // capacity 1: Recv took a frame queued ahead

	stopOut chan struct{} // closed by shutdown
	rdone   chan struct{} // closed when the reader has exited
	pdone   chan struct{} // closed when the pinger has exited

	mu      sync.Mutex
	free    [][]byte      // payload buffers for reuse
	err     error         // sticky I/O failure (a *ring.PeerLostError or ErrClosed)
	badErr  error         // sticky bad frame; later frames are discarded
	bad     chan struct{} // closed when badErr is set
	dead    chan struct{} // closed when err is set
	closing bool

	shutOnce sync.Once
}

// recvResult is the reader's answer to one Recv.
type recvResult struct {
	m   ring.Message
	err error
}

// recvReq is one Recv's request to the reader: the largest payload it
// takes and, for RecvPlace, where payloads may land (place) and the state
// of a payload being received there (st).
type recvReq struct {
	max   int
	place func(ring.Message, int) []byte
	st    *placeState
}

// placeState tracks a payload the reader receives into a RecvPlace
// caller's memory. RecvPlace must not return while the reader writes there,
// so when it gives up (abandoned) it waits until active is over (done is
// closed), breaking the read off if it takes longer than interruptGrace.
type placeState struct {
	mu        sync.Mutex
	abandoned bool          // the RecvPlace call gave up: place nothing more, return nothing placed
	active    bool          // the reader is receiving into placed memory
	delivered bool          // a good frame in placed memory is (being) answered to this RecvPlace
	done      chan struct{} // closed when active ends
}

var (
	_ ring.Link        = (*link)(nil)
	_ ring.LimitedLink = (*link)(nil)
	_ ring.Recycler    = (*link)(nil)
	_ ring.PlacingLink = (*link)(nil)
)

// newLink wraps an upgraded connection and starts its goroutines. shm is
// the link's shared memory with a same-host peer, or nil: the "next" link
// sends through it, the "prev" link receives from it.
func newLink(w *Worker, peer int, name string, ws *websocket.Conn, shm *shmRegion) *link {
	l := &link{
		w: w, peer: peer, name: name, ws: ws,
		want:    make(chan recvReq),
		got:     make(chan recvResult, 1),
		notify:  make(chan struct{}, 1),
		drained: make(chan struct{}, 1),
		stopOut: make(chan struct{}),
		rdone:   make(chan struct{}),
		pdone:   make(chan struct{}),
		bad:     make(chan struct{}),
		dead:    make(chan struct{}),
	}
	if shm != nil {
		if name == "next" {
			l.tx = &shmTx{r: shm}
		} else {
			l.rx = &shmRx{r: shm}
		}
	}
	ws.SetReadLimit(frameHeaderSize + MaxPayload)
	go l.reader()
	go l.pinger()
	return l
}

// readTimeout is how long the reader waits for any frame (data, ping or
// pong) before it declares the peer stalled; pings go out at pingInterval.
// Four fifths of PeerTimeout leaves room to relay the loss within
// PeerTimeout, while a peer starved of CPU for a few seconds (four ranks
// encoding HEVC on two cores stalled one for over 5 s) is not taken for dead.
func (l *link) readTimeout() time.Duration  { return l.w.cfg.PeerTimeout * 4 / 5 }
func (l *link) pingInterval() time.Duration { return l.w.cfg.PeerTimeout / 8 }

// Send writes m to the peer and returns once the socket has taken all of
// it: the payload is not copied and may be reused when Send returns. A
// peer that is alive but not reading (a rank that has not entered the
// collective yet) slows Send down rather than failing it; a dead, stalled
// or cut peer fails it within PeerTimeout (the reader's deadline, fed by
// the peer's pings, closes the connection). Send fails when ctx ends (the
// connection is then given up, as after any interrupted write), the link
// or any peer of the job is lost, or the worker is closed.
func (l *link) Send(ctx context.Context, m ring.Message) error {
	if err := l.sendErr(ctx); err != nil {
		return err
	}
	if len(m.Payload) > MaxPayload {
		return fmt.Errorf("worker: rank %d: send to rank %d: payload of %d bytes exceeds %d", l.w.cfg.Rank, l.peer, len(m.Payload), MaxPayload)
	}
	if m.Kind == 0 {
		return fmt.Errorf("worker: rank %d: send to rank %d: message kind 0", l.w.cfg.Rank, l.peer)
	}
	sum := payloadSum(m)
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.tx != nil && len(m.Payload) >= shmMinPayload {
		if pos, ok := l.tx.put(m.Payload); ok {
			putHeader(l.whdr[:], l.w.keys.job, m, l.seq, sum, flagShm)
			binary.LittleEndian.PutUint64(l.wpos[:], pos)
			err := l.write(ctx, l.whdr[:], l.wpos[:], len(m.Payload))
			if err == nil {
				l.w.metrics.LinkShmFrames.Add(1)
			}
			return err
		}
	}
	putHeader(l.whdr[:], l.w.keys.job, m, l.seq, sum, 0)
	return l.write(ctx, l.whdr[:], m.Payload, len(m.Payload))
}

// write sends one frame (header and payload, or header and the position
// of a shared-memory payload of size bytes) as one websocket message,
// advancing the sequence number. Caller holds wmu.
//
// A write whose context ends is broken off (stopWrite, from a
// context.AfterFunc callback) if it has not ended interruptGrace later.
// The callback runs only when the context ends: a write costs no
// goroutine hand-off.
func (l *link) write(ctx context.Context, hdr, payload []byte, size int) error {
	l.bmu.Lock()
	if l.wstop {
		l.bmu.Unlock()
		return l.sendErr(ctx)
	}
	l.wgen++
	gen := l.wgen
	l.writing = true
	l.bmu.Unlock()
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { l.stopWrite(gen, interruptGrace) })
	}
	err := l.writeFrame(hdr, payload)
	stop() // a callback already started finds the write ended (gen) and returns
	l.bmu.Lock()
	l.writing = false
	if l.wend != nil {
		close(l.wend)
		l.wend = nil
	}
	l.bmu.Unlock()
	if err == nil {
		// A break-off that came too late to stop the write did no harm:
		// gorilla sets its own deadline before every write.
		l.interrupted.Store(false)
	}
	if err != nil {
		if l.interrupted.Load() {
			// The caller's context ended (or the worker closed) mid-write:
			// the frame may be cut off, so the connection is of no further
			// use.
			l.fail(l.lostPeer(fmt.Errorf("link given up: a send to it was interrupted: %w", context.Cause(ctx))), failQuiet)
			l.ws.Close()
			if ctx.Err() == nil {
				return l.sendErr(ctx)
			}
			return fmt.Errorf("worker: rank %d: send to rank %d (%s link): %w", l.w.cfg.Rank, l.peer, l.name, context.Cause(ctx))
		}
		l.fail(l.lostPeer(fmt.Errorf("write to %s: %w", l.ws.RemoteAddr(), err)), failReport)
		return l.sendErr(ctx)
	}
	l.seq++
	l.w.metrics.LinkSentBytes.Add(int64(len(hdr) + size))
	l.w.metrics.LinkSentFrames.Add(1)
	return nil
}

// writeFrame writes header and payload as one binary message. As the
// websocket server, gorilla writes a payload chunk larger than twice its
// write buffer straight from payload (writev of frame header, link header
// and data); the small tail goes through the buffer with the final flag.
// No write deadline: liveness is the reader's business (see Send).
func (l *link) writeFrame(hdr, payload []byte) error {
	wr, err := l.ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	if _, err := wr.Write(hdr); err != nil {
		return err
	}
	if len(payload) > 4*writeTail {
		bulk := len(payload) - writeTail
		if _, err := wr.Write(payload[:bulk]); err != nil {
			return err
		}
		payload = payload[bulk:]
	}
	if _, err := wr.Write(payload); err != nil {
		return err
	}
	return wr.Close()
}

// stopWrite waits up to grace for data write gen to end and then breaks it
// off: it sets the connection's write deadline in the past until the write
// returns. A write in progress usually ends on its own within moments;
// only one stuck on a peer that does not read is broken off (which gives
// the connection up), so a rank that fails and stops its sender still
// leaves a working link for the abort it passes on. It returns at once if
// write gen is not in progress.
func (l *link) stopWrite(gen uint64, grace time.Duration) {
	l.bmu.Lock()
	if !l.writing || l.wgen != gen {
		l.bmu.Unlock()
		return
	}
	if l.wend == nil {
		l.wend = make(chan struct{})
	}
	end := l.wend
	l.bmu.Unlock()
	t := time.NewTimer(grace)
	select {
	case <-end:
		t.Stop()
		return
	case <-t.C:
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// gorilla sets its own deadline before each fragment: repeat
		// until the write has returned.
		l.breakOff(gen)
		select {
		case <-end:
			return
		case <-tick.C:
		}
	}
}

// breakOff sets the connection's write deadline in the past if data write
// gen is still in progress. Only then: a deadline set after the write
// finished could land just after a ping's WriteControl set its own and
// fail the ping, and gorilla keeps a failed write's error for every later
// write.
func (l *link) breakOff(gen uint64) {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	if l.writing && l.wgen == gen {
		l.interrupted.Store(true)
		l.ws.NetConn().SetWriteDeadline(time.Unix(1, 0))
	}
}

// sendErr reports why Send cannot proceed, or nil.
func (l *link) sendErr(ctx context.Context) error {
	wrap := func(err error) error {
		return fmt.Errorf("worker: rank %d: send to rank %d (%s link): %w", l.w.cfg.Rank, l.peer, l.name, err)
	}
	l.mu.Lock()
	err, closing := l.err, l.closing
	l.mu.Unlock()
	if err != nil {
		return wrap(err)
	}
	if closing || l.interrupted.Load() {
		return wrap(ErrClosed)
	}
	if err := l.w.lost(); err != nil {
		return wrap(err)
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return nil
}

// Recv is RecvLimit with the link's own limit, MaxPayload.
func (l *link) Recv(ctx context.Context) (ring.Message, error) {
	return l.recv(ctx, MaxPayload, nil)
}

// RecvLimit implements ring.LimitedLink: it returns the next frame from the
// peer, refusing one whose header announces a payload over max before
// anything of that size is allocated or read. At most readAhead frames, each
// within the bound of the last RecvLimit, are read before they are asked
// for (so a dead peer is noticed while this rank is busy); beyond that the
// reader waits for Recv, and a peer that sends faster than this rank
// receives is slowed down by TCP. Recv without a bound reads nothing ahead.
// Frames that arrived before a failure are still returned; after them Recv
// fails with the failure: a *ring.PeerLostError when the peer or the link
// is lost (or any other rank of the job, as reported by memberlist), an
// error wrapping gradcodec.ErrBadFrame for a malformed, corrupted, replayed,
// foreign or oversized frame, or ctx's error. The payload is the link's
// until the caller hands it back with Recycle. A payload dropped instead
// is garbage-collected, except one in shared memory (shm.go): that holds
// its place in the ring until the link closes, and once the ring is full
// of such payloads every later one goes over the socket.
func (l *link) RecvLimit(ctx context.Context, max int) (ring.Message, error) {
	return l.recv(ctx, max, nil)
}

// RecvPlace implements ring.PlacingLink: RecvLimit, except that a frame the
// reader reads for this call (not one read ahead) goes to the memory place
// names for its header, checked there as usual. When RecvPlace gives up
// (ctx, a lost rank) while the reader receives into that memory, it waits
// for the frame to end, at most interruptGrace, then breaks the read off
// (the link is then given up, as after an interrupted Send): it never
// returns while the link still writes into placed memory. A placed frame
// whose RecvPlace gave up is moved into a buffer of the link's before the
// next Recv gets it.
func (l *link) RecvPlace(ctx context.Context, max int, place func(ring.Message, int) []byte) (ring.Message, error) {
	return l.recv(ctx, max, place)
}

func (l *link) recv(ctx context.Context, max int, place func(ring.Message, int) []byte) (ring.Message, error) {
	wrap := func(err error) error {
		return fmt.Errorf("worker: rank %d: recv from rank %d (%s link): %w", l.w.cfg.Rank, l.peer, l.name, err)
	}
	bounded := max < MaxPayload
	max = min(max, MaxPayload)
	// deliver returns an answer of the reader. One that a Recv gave up on
	// was read under that Recv's bound: it must meet this one's too.
	deliver := func(res recvResult) (ring.Message, error) {
		if res.err != nil {
			return ring.Message{}, wrap(res.err)
		}
		if len(res.m.Payload) > max {
			l.Recycle(res.m.Payload)
			l.mu.Lock()
			l.setBadLocked(fmt.Errorf("%w: link frame payload of %d bytes exceeds the %d bytes expected next", gradcodec.ErrBadFrame, len(res.m.Payload), max))
			bad := l.badErr
			l.mu.Unlock()
			return ring.Message{}, wrap(bad)
		}
		return res.m, nil
	}
	// This call's bound lets the reader read ahead only once the call
	// returns: set earlier, it would let the reader take the very frame
	// this call is about to ask for as a frame read ahead, and a RecvPlace
	// would lose its placement to that race.
	defer func() {
		l.mu.Lock()
		l.lastMax = 0
		if bounded {
			l.lastMax = max
		}
		l.mu.Unlock()
	}()
	req := recvReq{max: max, place: place}
	if place != nil {
		req.st = &placeState{done: make(chan struct{})}
	}
	wait := func() (ring.Message, error) {
		var err error
		select {
		case res := <-l.got:
			return deliver(res)
		case <-ctx.Done():
			err = ctx.Err()
		case <-l.w.lostCh:
			err = l.w.lost()
		}
		if req.st != nil {
			l.abandon(req.st)
			// The frame was complete, checked and left in the caller's
			// memory before the call gave up: its answer is on the way
			// and must go to this call, never to the next Recv (which
			// would get the caller's memory, and might recycle it).
			req.st.mu.Lock()
			delivered := req.st.delivered
			req.st.mu.Unlock()
			if delivered {
				select {
				case res := <-l.got:
					return deliver(res)
				case <-l.stopOut:
				}
			}
		}
		return ring.Message{}, wrap(err)
	}
	for {
		// An answer to an earlier Recv that gave up is older than any
		// frame read ahead: it comes first.
		select {
		case res := <-l.got:
			return deliver(res)
		default:
		}
		l.mu.Lock()
		if len(l.ahead) > 0 {
			m := l.ahead[0]
			n := copy(l.ahead, l.ahead[1:])
			l.ahead[n] = ring.Message{}
			l.ahead = l.ahead[:n]
			if len(m.Payload) > max {
				l.setBadLocked(fmt.Errorf("%w: link frame payload of %d bytes exceeds the %d bytes expected next", gradcodec.ErrBadFrame, len(m.Payload), max))
				bad := l.badErr
				l.mu.Unlock()
				l.Recycle(m.Payload)
				return ring.Message{}, wrap(bad)
			}
			l.mu.Unlock()
			select {
			case l.drained <- struct{}{}:
			default:
			}
			return m, nil
		}
		bad := l.badErr
		l.mu.Unlock()
		if bad != nil {
			return ring.Message{}, wrap(bad)
		}
		// A frame the reader already holds goes before any failure.
		select {
		case l.want <- req:
			return wait()
		default:
		}
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		if err != nil {
			return ring.Message{}, wrap(err)
		}
		if err := l.w.lost(); err != nil {
			return ring.Message{}, wrap(err)
		}
		if err := ctx.Err(); err != nil {
			return ring.Message{}, wrap(err)
		}
		select {
		case l.want <- req:
			return wait()
		case res := <-l.got:
			return deliver(res)
		case <-l.notify:
		case <-l.bad:
		case <-l.dead:
		case <-l.w.lostCh:
		case <-ctx.Done():
		}
	}
}

// abandon is called by a RecvPlace that gives up: the reader places
// nothing more for it, and if it is receiving into placed memory now,
// abandon waits until it stops, breaking the read off after
// interruptGrace.
func (l *link) abandon(st *placeState) {
	st.mu.Lock()
	st.abandoned = true
	active := st.active
	st.mu.Unlock()
	if l.onAbandon != nil {
		l.onAbandon()
	}
	if !active {
		return
	}
	t := time.NewTimer(interruptGrace)
	defer t.Stop()
	select {
	case <-st.done:
		return
	case <-l.rdone:
		return
	case <-t.C:
	}
	// The peer does not finish the frame: break the read off (the link
	// is given up). The reader extends its deadline as data arrives, so
	// repeat until it has stopped.
	l.rbroken.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		l.ws.NetConn().SetReadDeadline(time.Unix(1, 0))
		select {
		case <-st.done:
			return
		case <-l.rdone:
			return
		case <-tick.C:
		}
	}
}

// setBadLocked records the first bad frame (l.mu held).
func (l *link) setBadLocked(err error) {
	if l.badErr == nil {
		l.badErr = err
		close(l.bad)
	}
}

// Recycle implements ring.Recycler: a payload Recv returned is free to
// receive into again (in shared memory: for the peer to write into).
func (l *link) Recycle(p []byte) {
	if l.rx != nil && l.rx.release(p) {
		return
	}
	if cap(p) <= smallPayload {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < maxFree {
		l.free = append(l.free, p[:0])
		return
	}
	// Full: keep the larger buffers, which serve every size.
	small := 0
	for i, b := range l.free {
		if cap(b) < cap(l.free[small]) {
			small = i
		}
	}
	if cap(l.free[small]) < cap(p) {
		l.free[small] = p[:0]
	}
}

// buffer returns a payload buffer of n bytes, reusing a recycled one when
// one is large enough: the smallest such, and of equal ones the last
// recycled, whose lines are the likeliest still in the cache (taking the
// first made the pool cycle through all its buffers, some 12 MiB per link,
// which with 4 ranks outgrows a 32 MiB L3; a 64 MiB raw allreduce of 4
// ranks on 2 CPUs took 108-110 ms instead of 112-115, four alternating
// runs each). New buffers are rounded up (to 1/8 of the next power of two)
// so that the slightly different sizes of sub-chunks reuse each other's
// buffers.
func (l *link) buffer(n int) []byte {
	if n <= smallPayload {
		// Status messages and tiny chunks: not worth a big buffer (the
		// ring forwards status payloads and never hands them back).
		return make([]byte, n)
	}
	l.mu.Lock()
	best := -1
	for i, b := range l.free {
		if cap(b) >= n && (best < 0 || cap(b) <= cap(l.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := l.free[best]
		l.free = slices.Delete(l.free, best, best+1) // keeps the order of recycling
		l.mu.Unlock()
		return b[:n]
	}
	l.mu.Unlock()
	step := 1 << (bits.Len(uint(n-1)) - 3)
	return make([]byte, n, (n+step-1)/step*step)
}

// smallPayload is the size up to which received payloads get their own
// small allocation rather than a recycled buffer.
const smallPayload = 4 << 10

// How a link failure spreads.
const (
	failQuiet  = iota // the peer closed the link on purpose: only this link fails
	failReport        // the peer is lost: fail the whole worker and gossip it
	failRelay         // the peer closed because it lost a rank: fail the whole worker
)

// fail records the link's terminal error: lost names the rank to blame
// (nil: the peer). Once the worker is closing every failure is ErrClosed.
func (l *link) fail(lost *ring.PeerLostError, how int) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	closing := l.closing
	if closing {
		l.err = ErrClosed
	} else {
		l.err = lost
	}
	l.mu.Unlock()
	switch {
	case closing, how == failQuiet:
		// A peer that closes on purpose is the normal end of a job (its
		// goodbye may still be on its way): nothing to log. A collective
		// still waiting on this link gets the error, naming the peer.
	default:
		// Unblock a writer stuck on a stalled socket; the connection is
		// of no further use.
		l.ws.Close()
		// Record the loss worker-wide before Send and Recv see the link
		// dead: a caller that closes the worker as soon as Recv fails must
		// name the lost rank in its close frames, or its neighbours would
		// blame it instead.
		l.w.peerLost(lost, how == failReport)
	}
	close(l.dead) // l.err was set once, above: this runs once
}

// lostPeer blames the peer of l.
func (l *link) lostPeer(cause error) *ring.PeerLostError {
	return &ring.PeerLostError{Rank: l.peer, Cause: cause}
}

// pinger sends a ping every pingInterval so that the peer's read deadline
// holds while no data flows. Its write errors are left to the reader and
// Send to notice; a ping that cannot get past a long data write in time is
// skipped (the data itself feeds the peer's deadline). No ping starts while
// a data write is in progress (the data feeds the peer's deadline, and a
// ping would queue behind it in the stream anyway): a break-off of that
// write, landing after the ping set its own deadline, would otherwise fail
// the ping, and gorilla keeps a failed write's error for every later write
// (also in the instant between a write's last flush and its end).
func (l *link) pinger() {
	defer close(l.pdone)
	t := time.NewTicker(l.pingInterval())
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.bmu.Lock()
			busy := l.writing
			l.bmu.Unlock()
			if busy {
				continue
			}
			l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.pingInterval()))
		case <-l.dead:
			return
		case <-l.stopOut:
			return
		}
	}
}

// extend pushes the read deadline out by readTimeout (unless a read was
// broken off for good).
func (l *link) extend() {
	if !l.rbroken.Load() {
		l.ws.SetReadDeadline(time.Now().Add(l.readTimeout()))
	}
}

// errStopped ends the reader when the link shuts down.
var errStopped = errors.New("worker: link shutting down")

// reader is the only goroutine that reads the connection. Both ends ping,
// so a ping or pong just feeds the read deadline; no pong is written (it
// could wait behind a long data write, holding up this loop).
func (l *link) reader() {
	defer close(l.rdone)
	l.ws.SetPingHandler(func(string) error { l.extend(); return nil })
	l.ws.SetPongHandler(func(string) error { l.extend(); return nil })
	var seq uint64
	for {
		l.extend()
		typ, r, err := l.ws.NextReader()
		if err != nil {
			l.readFailed(err)
			return
		}
		l.extend()
		asked, err := l.readFrame(typ, r, &seq)
		if err == nil {
			continue
		}
		var bad badFrame
		if errors.Is(err, errStopped) {
			if asked {
				l.answer(recvResult{err: ErrClosed})
			}
			return
		}
		if !errors.As(err, &bad) {
			l.readFailed(err)
			if asked {
				l.mu.Lock()
				lerr := l.err
				l.mu.Unlock()
				l.answer(recvResult{err: lerr})
			}
			return
		}
		l.mu.Lock()
		if l.badErr == nil {
			// Logged before the error is published, so that no Recv can
			// report a rejection the log does not have yet.
			l.w.logf("rejected a frame from rank %d on the %s link: %v", l.peer, l.name, bad.err)
		}
		l.setBadLocked(fmt.Errorf("frame %d from rank %d: %w", seq, l.peer, bad.err))
		badErr := l.badErr
		l.mu.Unlock()
		if asked {
			l.answer(recvResult{err: badErr})
		}
	}
}

// badFrame marks a frame error that leaves the connection usable.
type badFrame struct{ err error }

func (b badFrame) Error() string { return b.err.Error() }

// readFrame reads and checks one message: the header first, then — once a
// Recv asks, with its bound — the payload, straight into a (recycled)
// buffer. A good frame is handed to that Recv. asked reports that a Recv's
// request was taken and not answered (the caller answers it with err).
// Errors of the frame itself come back as badFrame; others are I/O errors
// or errStopped.
func (l *link) readFrame(typ int, r io.Reader, seq *uint64) (asked bool, err error) {
	discard := func(e error) (bool, error) {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return asked, err
		}
		return asked, badFrame{e}
	}
	if typ != websocket.BinaryMessage {
		return discard(fmt.Errorf("%w: websocket message of type %d, want binary", gradcodec.ErrBadFrame, typ))
	}
	hdr := l.hdr[:]
	n, err := io.ReadFull(r, hdr)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return false, badFrame{fmt.Errorf("%w: link frame of %d bytes is shorter than its %d-byte header (truncated)", gradcodec.ErrBadFrame, n, frameHeaderSize)}
	} else if err != nil {
		return false, err
	}
	l.mu.Lock()
	untrusted := l.badErr != nil
	l.mu.Unlock()
	if untrusted { // after a bad frame the stream is no longer trusted
		_, err := discard(nil)
		if _, ok := err.(badFrame); ok {
			err = nil
		}
		return false, err
	}
	fh, err := parseHeader(hdr, l.w.keys.job)
	if err != nil {
		return discard(err)
	}
	if fh.seq != *seq {
		return discard(fmt.Errorf("%w: link frame sequence %d, expected %d (replayed, dropped or reordered)", gradcodec.ErrBadFrame, fh.seq, *seq))
	}
	// Read ahead when the frame fits what the last Recv expected and there
	// is room; otherwise wait for a Recv (and its bound): until then
	// nothing of the payload is read.
	// A Recv already waiting (and nothing queued ahead of it) takes the
	// frame itself: its bound applies and its payload may be placed.
	var req recvReq
	l.mu.Lock()
	max := l.lastMax
	queued := len(l.ahead)
	l.mu.Unlock()
	if queued == 0 { // only the reader adds to ahead: it stays empty
		select {
		case req = <-l.want:
			max = req.max
			asked = true
		default:
		}
	}
	ahead := !asked && queued < readAhead && fh.length <= max
	if !asked && !ahead {
		for { // frames queued ahead go first
			l.mu.Lock()
			n := len(l.ahead)
			l.mu.Unlock()
			if n == 0 {
				break
			}
			select {
			case <-l.drained:
			case <-l.stopOut:
				return false, errStopped
			}
		}
		select {
		case req = <-l.want:
			max = req.max
			asked = true
		case <-l.stopOut:
			return false, errStopped
		}
	}
	l.extend() // the deadline set before a wait may long have passed
	if fh.length > max {
		return discard(fmt.Errorf("%w: link frame payload of %d bytes exceeds the %d bytes expected next (op %d %s hop %d chunk %d sub %d)",
			gradcodec.ErrBadFrame, fh.length, max, fh.msg.Op, fh.msg.Kind, fh.msg.Hop, fh.msg.Chunk, fh.msg.Sub))
	}
	var src []byte // the payload where it lies in shared memory
	if fh.shm {
		if l.rx == nil {
			return discard(fmt.Errorf("%w: link frame with its payload in shared memory, but this link has none", gradcodec.ErrBadFrame))
		}
		var pos [8]byte
		if k, err := io.ReadFull(r, pos[:]); err == io.ErrUnexpectedEOF || err == io.EOF {
			return asked, badFrame{fmt.Errorf("%w: shared-memory link frame of %d bytes after its header, want 8 (truncated)", gradcodec.ErrBadFrame, k)}
		} else if err != nil {
			return asked, err
		}
		p, err := l.rx.take(binary.LittleEndian.Uint64(pos[:]), fh.length)
		if err != nil {
			return discard(fmt.Errorf("%w: %v", gradcodec.ErrBadFrame, err))
		}
		src = p
	}
	payload, placed := l.place(req, fh, src)
	defer func() {
		if placed { // a frame that failed: the caller gets the error
			l.unplace(req.st, nil)
		}
	}()
	recycle := func() {
		if !placed {
			l.Recycle(payload)
		}
	}
	// Each read's bytes are checksummed as soon as the kernel has copied
	// them in, while they are still in the cache (reads of at most
	// crcPiece bytes), so the check costs no pass over memory of its own.
	got, sum, extended := 0, uint32(0), 0
	if src != nil {
		// Checked where the sender wrote it, or while copied into placed
		// memory piece by piece (each piece checked while in the cache).
		for got < len(payload) {
			e := min(len(payload), got+crcPiece)
			if placed {
				copy(payload[got:e], src[got:e])
			}
			sum = kern.UpdateCRC32C(sum, payload[got:e])
			got = e
		}
		if placed {
			l.rx.release(src)
		}
	}
	for got < len(payload) {
		k, err := r.Read(payload[got:min(len(payload), got+crcPiece)])
		sum = kern.UpdateCRC32C(sum, payload[got:got+k])
		got += k
		if err == io.EOF && got < len(payload) {
			recycle()
			return asked, badFrame{fmt.Errorf("%w: link frame payload of %d bytes, header says %d (truncated)", gradcodec.ErrBadFrame, got, fh.length)}
		} else if err != nil && err != io.EOF {
			return asked, err
		}
		if got-extended >= ioChunk {
			l.extend()
			extended = got
		}
	}
	var one [1]byte
	if k, err := io.ReadFull(r, one[:]); k > 0 {
		recycle()
		extra, err := io.Copy(io.Discard, r)
		if err != nil {
			return asked, err
		}
		return asked, badFrame{fmt.Errorf("%w: %d bytes after the %d-byte payload the header announces", gradcodec.ErrBadFrame, extra+1, fh.length)}
	} else if err != io.EOF && err != io.ErrUnexpectedEOF {
		recycle()
		return asked, err
	}
	if c := sum; c != fh.msg.Sum {
		recycle()
		return asked, badFrame{fmt.Errorf("%w: link frame payload checksum %08x, header says %08x (corrupted)", gradcodec.ErrBadFrame, c, fh.msg.Sum)}
	}
	*seq++
	m := fh.msg
	m.Payload = payload
	l.w.metrics.LinkRecvBytes.Add(int64(frameHeaderSize + got))
	l.w.metrics.LinkRecvFrames.Add(1)
	if !asked {
		l.mu.Lock()
		l.ahead = append(l.ahead, m)
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
		return false, nil
	}
	if placed {
		placed = false // unplace runs now, not deferred
		l.unplace(req.st, &m)
		if l.onUnplaced != nil {
			l.onUnplaced(req.st)
		}
	}
	l.answer(recvResult{m: m})
	return false, nil
}

// place returns the memory the payload of fh goes to: the request's own
// (placed) when its RecvPlace is still waiting and names memory of exactly
// that length, else src, the payload in shared memory, when there is one,
// else a buffer of the link's.
func (l *link) place(req recvReq, fh frameHeader, src []byte) ([]byte, bool) {
	if req.place != nil && fh.length > 0 {
		if p := req.place(fh.msg, fh.length); len(p) == fh.length {
			req.st.mu.Lock()
			ok := !req.st.abandoned
			req.st.active = ok
			req.st.mu.Unlock()
			if ok {
				if l.onPlaced != nil {
					l.onPlaced()
				}
				return p, true
			}
		}
	}
	if src != nil {
		return src, false
	}
	return l.buffer(fh.length), false
}

// unplace ends the reader's writes into placed memory. A good frame m
// whose RecvPlace gave up meanwhile is moved into a buffer of the link's
// first, so the next Recv gets it in order without the caller's memory;
// one whose RecvPlace had not given up yet is marked delivered, and that
// RecvPlace takes its answer even if it gives up now.
func (l *link) unplace(st *placeState, m *ring.Message) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.abandoned && m != nil {
		b := l.buffer(len(m.Payload))
		copy(b, m.Payload)
		m.Payload = b
	} else if m != nil {
		st.delivered = true
	}
	st.active = false
	close(st.done)
}

// answer hands the reader's result to the waiting Recv. It gives up when
// the link shuts down, so that a Recv that abandoned its answer (its
// context ended) can never leave the reader blocked and Close waiting for
// it.
func (l *link) answer(r recvResult) {
	select {
	case l.got <- r:
	case <-l.stopOut:
	}
}

// readFailed turns a read error into the link's failure.
func (l *link) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case l.rbroken.Load():
		// A RecvPlace gave up while the peer was still sending into its
		// memory: the frame is cut off, so the connection is of no
		// further use (as after an interrupted Send).
		l.fail(l.lostPeer(fmt.Errorf("link given up: a receive from it was interrupted: %w", err)), failQuiet)
		l.ws.Close()
	case errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway):
		if lost, ok := l.parseCloseReason(ce.Text); ok {
			l.fail(lost, failRelay)
			return
		}
		l.fail(l.lostPeer(fmt.Errorf("rank %d closed the link", l.peer)), failQuiet)
	case errors.As(err, &ne) && ne.Timeout():
		l.fail(l.lostPeer(fmt.Errorf("no frame from %s for %v (stalled peer or cut link): %w", l.ws.RemoteAddr(), l.readTimeout(), err)), failReport)
	default:
		l.fail(l.lostPeer(fmt.Errorf("read from %s: %w", l.ws.RemoteAddr(), err)), failReport)
	}
}

// Close frame reasons: a worker that closes after losing a rank says which,
// so its neighbours blame that rank rather than the one closing.
const (
	closeReasonBye  = "vccl worker closing"
	closeReasonLost = "vccl lost rank "
)

// closeReason is the text of this worker's close frame.
func (l *link) closeReason() string {
	err := l.w.lost()
	if err == nil {
		return closeReasonBye
	}
	var pl *ring.PeerLostError
	errors.As(err, &pl)
	s := fmt.Sprintf("%s%d: %v", closeReasonLost, pl.Rank, pl.Cause)
	if len(s) > 120 { // a close frame's reason holds 123 bytes
		s = s[:120]
	}
	return s
}

// parseCloseReason reads the rank a closing peer lost.
func (l *link) parseCloseReason(text string) (*ring.PeerLostError, bool) {
	rest, ok := strings.CutPrefix(text, closeReasonLost)
	if !ok {
		return nil, false
	}
	num, cause, _ := strings.Cut(rest, ": ")
	r, err := strconv.Atoi(num)
	if err != nil || r < 0 || r >= l.w.cfg.WorldSize {
		return nil, false
	}
	if r == l.w.cfg.Rank { // the peer lost this rank: blame the peer
		return l.lostPeer(fmt.Errorf("rank %d lost contact with this rank and closed the link: %s", l.peer, cause)), true
	}
	return &ring.PeerLostError{Rank: r, Cause: fmt.Errorf("reported by rank %d as it closed: %s", l.peer, cause)}, true
}

// shutdown ends the link: an ongoing Send finishes or fails (bounded by
// readTimeout), the link closes with a close handshake (bounded by
// readTimeout) and shutdown waits for the link's goroutines. It is
// idempotent.
func (l *link) shutdown() {
	l.shutOnce.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		close(l.stopOut)
		<-l.pdone
		// A data write in progress gets readTimeout to finish, then is
		// broken off; none starts after this.
		l.bmu.Lock()
		l.wstop = true
		gen := l.wgen
		l.bmu.Unlock()
		l.stopWrite(gen, l.readTimeout())
		l.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, l.closeReason()),
			time.Now().Add(l.readTimeout()))
		t := time.NewTimer(l.readTimeout())
		select {
		case <-l.rdone:
		case <-t.C:
		}
		t.Stop()
		l.ws.Close()
		<-l.rdone
		l.wmu.Lock() // a Send in progress has failed by now
		if l.tx != nil {
			l.tx.r.unmap()
			l.tx = nil
		}
		l.wmu.Unlock()
		l.fail(nil, failQuiet)
		if l.rx != nil {
			// Frames read ahead are never asked for now; a payload the
			// ring still holds keeps the mapping until it is recycled.
			l.mu.Lock()
			ahead := l.ahead
			l.ahead = nil
			l.mu.Unlock()
			for _, m := range ahead {
				l.rx.release(m.Payload)
			}
			l.rx.close()
		}
	})
}
