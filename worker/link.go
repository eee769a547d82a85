package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// ErrClosed is returned by Send and Recv after Close.
var ErrClosed = errors.New("worker: closed")

const (
	// ioChunk is the granularity at which frame reads and writes extend
	// their deadlines, so a large frame on a slow link is not mistaken for
	// a stall while it makes progress.
	ioChunk = 1 << 20
	// sendQueue is how many frames Send may queue ahead of the socket.
	sendQueue = 8
	// maxQueuedBytes bounds the received frames not yet taken by Recv.
	maxQueuedBytes = 4 << 30
)

// link is one websocket connection to a ring neighbour. It implements
// ring.Link in both directions: Send frames go out through one writer
// goroutine, a reader goroutine queues incoming frames for Recv (and keeps
// answering pings while Recv is not called), and a pinger keeps the peer's
// read deadline fed.
type link struct {
	w    *Worker
	peer int    // rank at the other end
	name string // "next" or "prev", for errors
	ws   *websocket.Conn

	out     chan outFrame // sealed by the writer
	stopOut chan struct{} // closed by shutdown: the writer drains out and exits
	wdone   chan struct{} // closed when the writer has exited
	rdone   chan struct{} // closed when the reader has exited
	pdone   chan struct{} // closed when the pinger has exited

	mu      sync.Mutex
	q       []ring.Message
	qBytes  int64
	notify  chan struct{} // capacity 1: something was queued or failed
	err     error         // sticky I/O failure (a *ring.PeerLostError or ErrClosed)
	badErr  error         // sticky bad frame; later frames are discarded
	dead    chan struct{} // closed when err is set
	closing bool

	shutOnce sync.Once
}

var _ ring.Link = (*link)(nil)

// newLink wraps an upgraded connection and starts its goroutines.
func newLink(w *Worker, peer int, name string, ws *websocket.Conn) *link {
	l := &link{
		w: w, peer: peer, name: name, ws: ws,
		out:     make(chan outFrame, sendQueue),
		stopOut: make(chan struct{}),
		wdone:   make(chan struct{}),
		rdone:   make(chan struct{}),
		pdone:   make(chan struct{}),
		notify:  make(chan struct{}, 1),
		dead:    make(chan struct{}),
	}
	ws.SetReadLimit(frameHeaderSize + MaxPayload)
	go l.writer()
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

// Send queues m for the peer. It returns once the frame is queued (the
// payload is copied), or with an error when ctx ends, the link or any peer
// of the job is lost, or the worker is closed.
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
	f := appendFrame(make([]byte, 0, frameHeaderSize+len(m.Payload)), l.w.keys.job, m)
	select {
	case l.out <- outFrame{f: f}:
		return nil
	case <-ctx.Done():
	case <-l.dead:
	case <-l.stopOut:
	case <-l.w.lostCh:
	}
	if err := l.sendErr(ctx); err != nil {
		return err
	}
	return fmt.Errorf("worker: rank %d: send to rank %d: %w", l.w.cfg.Rank, l.peer, ErrClosed)
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
	if closing {
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

// Recv returns the next frame from the peer. Frames that arrived before a
// failure are still returned; after them Recv fails with the failure: a
// *ring.PeerLostError when the peer or the link is lost (or any other rank
// of the job, as reported by memberlist), an error wrapping
// gradcodec.ErrBadFrame for a malformed, corrupted, replayed or foreign
// frame, or ctx's error.
func (l *link) Recv(ctx context.Context) (ring.Message, error) {
	wrap := func(err error) error {
		return fmt.Errorf("worker: rank %d: recv from rank %d (%s link): %w", l.w.cfg.Rank, l.peer, l.name, err)
	}
	for {
		l.mu.Lock()
		if len(l.q) > 0 {
			m := l.q[0]
			l.q[0] = ring.Message{}
			l.q = l.q[1:]
			l.qBytes -= int64(len(m.Payload))
			l.mu.Unlock()
			return m, nil
		}
		bad, err := l.badErr, l.err
		l.mu.Unlock()
		if bad != nil {
			return ring.Message{}, wrap(bad)
		}
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
		case <-l.notify:
		case <-l.dead:
		case <-l.w.lostCh:
		case <-ctx.Done():
		}
	}
}

// wake nudges a waiting Recv.
func (l *link) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

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
	l.wake()
}

// lostPeer blames the peer of l.
func (l *link) lostPeer(cause error) *ring.PeerLostError {
	return &ring.PeerLostError{Rank: l.peer, Cause: cause}
}

// outFrame is a frame waiting for the writer. mutate, set only by tests,
// rewrites the sealed frame to forge a bad one.
type outFrame struct {
	f      []byte
	mutate func([]byte) []byte
}

// writer is the only goroutine that writes data frames.
func (l *link) writer() {
	defer close(l.wdone)
	var seq uint64
	write := func(o outFrame) bool {
		f := o.f
		sealFrame(f, seq)
		seq++
		if o.mutate != nil {
			f = o.mutate(f)
		}
		if err := l.writeFrame(f); err != nil {
			l.fail(l.lostPeer(fmt.Errorf("write to %s: %w", l.ws.RemoteAddr(), err)), failReport)
			return false
		}
		l.w.metrics.LinkSentBytes.Add(int64(len(f)))
		l.w.metrics.LinkSentFrames.Add(1)
		return true
	}
	for {
		select {
		case f := <-l.out:
			if !write(f) {
				return
			}
		case <-l.dead:
			return
		case <-l.stopOut:
			for { // flush what Send already accepted
				select {
				case f := <-l.out:
					if !write(f) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// writeFrame writes one binary message, extending the write deadline per
// chunk that the socket accepts.
func (l *link) writeFrame(f []byte) error {
	wr, err := l.ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	for len(f) > 0 {
		n := min(len(f), ioChunk)
		if err := l.ws.SetWriteDeadline(time.Now().Add(l.w.cfg.PeerTimeout)); err != nil {
			return err
		}
		if _, err := wr.Write(f[:n]); err != nil {
			return err
		}
		f = f[n:]
	}
	if err := l.ws.SetWriteDeadline(time.Now().Add(l.w.cfg.PeerTimeout)); err != nil {
		return err
	}
	return wr.Close()
}

// pinger sends a ping every pingInterval so that the peer's read deadline
// holds while no data flows. Its write errors are left to the reader and
// writer to notice.
func (l *link) pinger() {
	defer close(l.pdone)
	t := time.NewTicker(l.pingInterval())
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.readTimeout()))
		case <-l.dead:
			return
		case <-l.stopOut:
			return
		}
	}
}

// extend pushes the read deadline out by readTimeout.
func (l *link) extend() { l.ws.SetReadDeadline(time.Now().Add(l.readTimeout())) }

// reader is the only goroutine that reads the connection.
func (l *link) reader() {
	defer close(l.rdone)
	l.ws.SetPingHandler(func(data string) error {
		l.extend()
		err := l.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(l.readTimeout()))
		var ne net.Error
		if err == websocket.ErrCloseSent || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	l.ws.SetPongHandler(func(string) error { l.extend(); return nil })
	var seq uint64
	hdr := make([]byte, frameHeaderSize)
	for {
		l.extend()
		typ, r, err := l.ws.NextReader()
		if err != nil {
			l.readFailed(err)
			return
		}
		l.extend()
		m, n, err := l.readFrame(typ, r, hdr, &seq)
		if err != nil {
			var bad badFrame
			if !errors.As(err, &bad) {
				l.readFailed(err)
				return
			}
			l.mu.Lock()
			first := l.badErr == nil
			if first {
				l.badErr = fmt.Errorf("frame %d from rank %d: %w", seq, l.peer, bad.err)
			}
			l.mu.Unlock()
			if first {
				l.w.logf("rejected a frame from rank %d on the %s link: %v", l.peer, l.name, bad.err)
				l.wake()
			}
			continue
		}
		l.w.metrics.LinkRecvBytes.Add(int64(n))
		l.w.metrics.LinkRecvFrames.Add(1)
		l.mu.Lock()
		if l.badErr != nil { // the stream is no longer trusted
			l.mu.Unlock()
			continue
		}
		if l.qBytes+int64(len(m.Payload)) > maxQueuedBytes {
			l.badErr = fmt.Errorf("%w: more than %d bytes received from rank %d and not taken by Recv", gradcodec.ErrBadFrame, maxQueuedBytes, l.peer)
			l.mu.Unlock()
			l.wake()
			continue
		}
		l.q = append(l.q, m)
		l.qBytes += int64(len(m.Payload))
		l.mu.Unlock()
		l.wake()
	}
}

// badFrame marks a frame error that leaves the connection usable.
type badFrame struct{ err error }

func (b badFrame) Error() string { return b.err.Error() }

// readFrame reads and checks one message. Errors of the frame itself come
// back as badFrame; others are I/O errors.
func (l *link) readFrame(typ int, r io.Reader, hdr []byte, seq *uint64) (ring.Message, int, error) {
	if typ != websocket.BinaryMessage {
		io.Copy(io.Discard, r)
		return ring.Message{}, 0, badFrame{fmt.Errorf("%w: websocket message of type %d, want binary", gradcodec.ErrBadFrame, typ)}
	}
	n, err := io.ReadFull(r, hdr)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return ring.Message{}, n, badFrame{fmt.Errorf("%w: link frame of %d bytes is shorter than its %d-byte header (truncated)", gradcodec.ErrBadFrame, n, frameHeaderSize)}
	} else if err != nil {
		return ring.Message{}, n, err
	}
	fh, err := parseHeader(hdr, l.w.keys.job)
	if err != nil {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return ring.Message{}, n, err
		}
		return ring.Message{}, n, badFrame{err}
	}
	payload := make([]byte, fh.length)
	got := 0
	for got < len(payload) {
		k, err := io.ReadFull(r, payload[got:min(len(payload), got+ioChunk)])
		got += k
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return ring.Message{}, n + got, badFrame{fmt.Errorf("%w: link frame payload of %d bytes, header says %d (truncated)", gradcodec.ErrBadFrame, got, fh.length)}
		} else if err != nil {
			return ring.Message{}, n + got, err
		}
		l.extend()
	}
	var one [1]byte
	if k, err := io.ReadFull(r, one[:]); k > 0 {
		extra, err := io.Copy(io.Discard, r)
		if err != nil {
			return ring.Message{}, n + got, err
		}
		return ring.Message{}, n + got, badFrame{fmt.Errorf("%w: %d bytes after the %d-byte payload the header announces", gradcodec.ErrBadFrame, extra+1, fh.length)}
	} else if err != io.EOF && err != io.ErrUnexpectedEOF {
		return ring.Message{}, n + got, err
	}
	if c := frameCRC(hdr, payload); c != fh.wantCRC {
		return ring.Message{}, n + got, badFrame{fmt.Errorf("%w: link frame checksum %08x, header says %08x (corrupted)", gradcodec.ErrBadFrame, c, fh.wantCRC)}
	}
	if fh.seq != *seq {
		return ring.Message{}, n + got, badFrame{fmt.Errorf("%w: link frame sequence %d, expected %d (replayed, dropped or reordered)", gradcodec.ErrBadFrame, fh.seq, *seq)}
	}
	*seq++
	m := fh.msg
	m.Payload = payload
	return m, n + got, nil
}

// readFailed turns a read error into the link's failure.
func (l *link) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
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

// shutdown flushes queued frames (bounded by PeerTimeout), closes the link
// with a close handshake (bounded by readTimeout) and waits for the link's
// goroutines. It is idempotent.
func (l *link) shutdown() {
	l.shutOnce.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		close(l.stopOut)
		<-l.wdone
		<-l.pdone
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
		l.fail(nil, failQuiet)
	})
}
