// Package ringtest provides an in-memory network of ring links with fault
// injection, and two small deterministic codecs, for testing package ring and
// the code built on it without sockets. In the manner of etcd raft's test
// network, faults are scripted (drop, corrupt or delay the n-th message a
// rank sends, cut a rank after its n-th send, break a link, replay a recorded
// message), so tests need no sleeps.
//
// A Network runs no goroutines of its own: a link is a queue guarded by a
// mutex, so after every rank's collective has returned nothing of the
// network is left running.
package ringtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vccl/vccl/ring"
)

// ErrCut is the cause inside the *ring.PeerLostError that links of a cut
// rank or a broken link return.
var ErrCut = errors.New("ringtest: link cut")

// Action is what a fault does to the message that triggers it.
type Action int

// Fault actions.
const (
	Drop        Action = iota + 1 // the message silently disappears
	Corrupt                       // one payload byte is flipped (the message is still delivered)
	CutSender                     // the sending rank is cut before the message is delivered
	CutReceiver                   // the receiving rank is cut before the message is delivered
	Break                         // the link breaks before the message is delivered
	Refuse                        // Send returns ErrRefused; the link stays up
)

// ErrRefused is what Send returns for a message a Refuse fault rejects, as a
// real link does for, say, a payload over its size limit.
var ErrRefused = errors.New("ringtest: message refused")

// Fault triggers once, on the Nth (0-based) message rank From sends whose
// kind matches Kind (0 matches every kind).
type Fault struct {
	From   int
	Kind   ring.Kind
	Nth    int
	Action Action
}

// Network is a ring of in-memory links: links[i] carries messages from rank
// i to rank (i+1)%size, in order. It is safe for concurrent use.
type Network struct {
	size  int
	links []*link

	mu         sync.Mutex
	faults     []*faultState
	delay      []time.Duration
	record     bool
	sent       [][]ring.Message
	capacity   int
	maxPayload int
}

type faultState struct {
	Fault
	seen  int
	fired bool
}

// NewNetwork returns a network for a ring of size ranks with unbounded
// links.
func NewNetwork(size int) *Network {
	n := &Network{size: size, delay: make([]time.Duration, size), sent: make([][]ring.Message, size)}
	for i := 0; i < size; i++ {
		n.links = append(n.links, &link{net: n, from: i, to: (i + 1) % size, changed: make(chan struct{})})
	}
	return n
}

// Size returns the number of ranks.
func (n *Network) Size() int { return n.size }

// AbortGrace is the Ring.AbortGrace of the rings a Network hands out,
// shorter than the default to keep fault tests quick, long enough for a
// busy neighbour on a loaded machine.
const AbortGrace = 500 * time.Millisecond

// Ring returns rank's view of the ring.
func (n *Network) Ring(rank int) *ring.Ring {
	r := &ring.Ring{Rank: rank, Size: n.size, AbortGrace: AbortGrace}
	if n.size > 1 {
		r.Next = n.links[rank]
		r.Prev = n.links[(rank-1+n.size)%n.size]
	}
	return r
}

// SetCapacity bounds every link to c queued messages (Send blocks while the
// link is full); 0 means unbounded.
func (n *Network) SetCapacity(c int) {
	n.mu.Lock()
	n.capacity = c
	n.mu.Unlock()
	for _, l := range n.links {
		l.signal()
	}
}

// SetMaxPayload makes every link refuse (Send fails with an error wrapping
// ErrRefused, the link stays up) a data message whose payload is longer
// than max bytes, as a real link refuses one over its message limit; 0
// means no limit. Status messages (KindEnter, KindDone, KindAbort: at most
// about 1 KiB) are exempt, as they are under any real link's limit.
func (n *Network) SetMaxPayload(max int) {
	n.mu.Lock()
	n.maxPayload = max
	n.mu.Unlock()
}

// AddFault arms f.
func (n *Network) AddFault(f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = append(n.faults, &faultState{Fault: f})
}

// Fired reports whether every armed fault has triggered.
func (n *Network) Fired() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, f := range n.faults {
		if !f.fired {
			return false
		}
	}
	return true
}

// Delay makes every message rank from sends receivable only d after it was
// sent (order is kept).
func (n *Network) Delay(from int, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay[from] = d
}

// Record turns recording of sent messages on or off; see Sent.
func (n *Network) Record(on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record = on
}

// Sent returns copies of the messages rank from sent while recording was on.
func (n *Network) Sent(from int) []ring.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]ring.Message(nil), n.sent[from]...)
}

// Enqueue puts m on the link out of rank from as if from had sent it (a
// replay or a forged message); faults do not apply.
func (n *Network) Enqueue(from int, m ring.Message) {
	m.Payload = append([]byte(nil), m.Payload...)
	n.links[from].put(context.Background(), m, 0)
}

// Cut breaks both links of rank: every pending and later Send and Recv on
// them returns a *ring.PeerLostError naming the rank at the other end.
func (n *Network) Cut(rank int) {
	if n.size < 2 {
		return
	}
	n.links[rank].breakLink()
	n.links[(rank-1+n.size)%n.size].breakLink()
}

// BreakLink breaks the link from rank from to its next rank.
func (n *Network) BreakLink(from int) { n.links[from].breakLink() }

// onSend applies faults and recording to a message rank from is sending;
// it returns the message to deliver, or false to drop it, the delay, and
// whether Send must refuse it.
func (n *Network) onSend(from int, m ring.Message) (ring.Message, bool, time.Duration, bool) {
	n.mu.Lock()
	var act Action
	for _, f := range n.faults {
		if f.fired || f.From != from || (f.Kind != 0 && f.Kind != m.Kind) {
			continue
		}
		if f.seen == f.Nth && act == 0 {
			f.fired = true
			act = f.Action
		}
		f.seen++
	}
	m.Payload = append([]byte(nil), m.Payload...)
	if n.record {
		c := m
		c.Payload = append([]byte(nil), m.Payload...)
		n.sent[from] = append(n.sent[from], c)
	}
	d := n.delay[from]
	n.mu.Unlock()
	switch act {
	case Refuse:
		return m, false, d, true
	case Drop:
		return m, false, d, false
	case Corrupt:
		if len(m.Payload) > 0 {
			m.Payload[len(m.Payload)/2] ^= 0x5a
		}
	case CutSender:
		n.Cut(from)
	case CutReceiver:
		n.Cut((from + 1) % n.size)
	case Break:
		n.BreakLink(from)
	}
	return m, true, d, false
}

type queued struct {
	m     ring.Message
	ready time.Time
}

// link is one direction from rank from to rank to.
type link struct {
	net      *Network
	from, to int

	mu      sync.Mutex
	q       []queued
	broken  bool
	changed chan struct{} // closed and replaced on every state change
}

var _ ring.Link = (*link)(nil)

func (l *link) signal() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *link) breakLink() {
	l.mu.Lock()
	l.broken = true
	l.q = nil
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Send implements ring.Link.
func (l *link) Send(ctx context.Context, m ring.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	broken := l.broken
	l.mu.Unlock()
	if broken {
		return &ring.PeerLostError{Rank: l.to, Cause: ErrCut}
	}
	l.net.mu.Lock()
	limit := l.net.maxPayload
	l.net.mu.Unlock()
	if limit > 0 && len(m.Payload) > limit && m.Kind != ring.KindDone && m.Kind != ring.KindAbort && m.Kind != ring.KindEnter {
		return fmt.Errorf("ringtest: send on link %d->%d: payload of %d bytes over the limit of %d: %w", l.from, l.to, len(m.Payload), limit, ErrRefused)
	}
	m, deliver, d, refused := l.net.onSend(l.from, m)
	if refused {
		return fmt.Errorf("ringtest: send on link %d->%d: %w", l.from, l.to, ErrRefused)
	}
	if !deliver {
		return nil
	}
	return l.put(ctx, m, d)
}

func (l *link) put(ctx context.Context, m ring.Message, d time.Duration) error {
	l.net.mu.Lock()
	capacity := l.net.capacity
	l.net.mu.Unlock()
	l.mu.Lock()
	for {
		if l.broken {
			l.mu.Unlock()
			return &ring.PeerLostError{Rank: l.to, Cause: ErrCut}
		}
		if capacity == 0 || len(l.q) < capacity {
			break
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		l.mu.Lock()
	}
	var ready time.Time
	if d > 0 {
		ready = time.Now().Add(d)
	}
	l.q = append(l.q, queued{m, ready})
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

// Recv implements ring.Link.
func (l *link) Recv(ctx context.Context) (ring.Message, error) {
	l.mu.Lock()
	for {
		if l.broken {
			l.mu.Unlock()
			return ring.Message{}, &ring.PeerLostError{Rank: l.from, Cause: ErrCut}
		}
		var timer *time.Timer
		if len(l.q) > 0 {
			h := l.q[0]
			wait := time.Until(h.ready)
			if h.ready.IsZero() || wait <= 0 {
				l.q[0] = queued{}
				l.q = l.q[1:]
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
				return h.m, nil
			}
			timer = time.NewTimer(wait)
		}
		ch := l.changed
		l.mu.Unlock()
		var tc <-chan time.Time
		if timer != nil {
			tc = timer.C
		}
		select {
		case <-ch:
		case <-tc:
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ring.Message{}, fmt.Errorf("ringtest: recv on link %d->%d: %w", l.from, l.to, ctx.Err())
		}
		if timer != nil {
			timer.Stop()
		}
		l.mu.Lock()
	}
}
