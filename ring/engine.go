package ring

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/vccl/vccl/internal/kern"
)

// DefaultAbortGrace is the default of Ring.AbortGrace.
const DefaultAbortGrace = 2 * time.Second

// step is one data message a rank sends or receives, in link order.
type step struct {
	kind            Kind
	hop, chunk, sub uint32
	// wait (send steps only): the payload is built from the next received
	// data message (the receive steps pair with waiting send steps in order).
	wait bool
}

// job is the data part of a collective; the engine runs the protocol.
type job interface {
	// build returns the payload of send step i and its Message.Sum (0: the
	// engine computes it); in and inSum are the payload and Sum of the
	// receive step paired with it (nil and 0 unless the step waits; in is
	// nil too when consume did not keep it). Called from the sender
	// goroutine only.
	build(i int, in []byte, inSum uint32) ([]byte, uint32, error)
	// consume handles receive step i. keep reports that the job holds on to
	// m.Payload to forward it (the send step paired with i builds from it);
	// otherwise, and once that send is done with it, the engine hands it
	// back to the link for reuse, so consume must copy what it keeps
	// beyond that. sum is the inSum build gets for the send
	// step paired with it: m.Sum, or the checksum of what consume made of
	// the payload when that is what the step sends (the raw path's sums).
	// Called from the controller only.
	consume(i int, m Message) (keep bool, sum uint32, err error)
}

// castagnoli is the CRC-32C table of Message.Sum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// received is a consumed payload on its way to the send step that waits for
// it.
type received struct {
	payload []byte // nil unless the job kept it
	sum     uint32
}

// engine runs one collective on one rank: a sender goroutine sends the data
// steps then the tokens, a pump goroutine receives, and the calling goroutine
// (the controller) consumes data, runs the end-of-collective token round and
// decides the result. See doc.go for the protocol.
type engine struct {
	r          *Ring
	op         uint64
	total      uint64
	checkTotal bool
	sends      []step
	recvs      []step
	job        job
	nWait      int // send steps that wait (paired in order with the first nWait receive steps)

	// sender-owned statistics
	sWire, sRaw int64
	sWait       time.Duration
	sBuild      time.Duration
	// controller-owned statistics
	cWait    time.Duration
	cConsume time.Duration
	rawOf    func(send int) int64 // raw fp32 bytes of send step i (for Stats.RawBytes)
	// recvMax bounds the payload of receive step i (nil: only the link's
	// own limit applies). See pump.
	recvMax func(recv int) int
	// place (nil: none) names the job's memory a message's payload may be
	// received into over a PlacingLink (see allReduce.place); owns reports
	// that a payload is such memory, which is never recycled.
	place func(m Message, n int) []byte
	owns  func(p []byte) bool
}

type senderEvent struct {
	phase1 bool  // the data phase ended (err nil: all sent or stopped)
	err    error // a build error (non-fatal) or a link error (fatal)
	fatal  bool
}

type recvResult struct {
	m   Message
	err error
}

// linkDown reports whether a Send error means the link is gone (a lost peer,
// an ended context) rather than one refused message.
func linkDown(err error) bool {
	return errors.Is(err, ErrPeerLost) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (e *engine) grace() time.Duration {
	if e.r.AbortGrace > 0 {
		return e.r.AbortGrace
	}
	return DefaultAbortGrace
}

// TimeoutExtra is how long past Ring.Timeout a rank that heard from its
// previous rank waits for the error of a rank upstream before it gives up
// itself: a quarter of the timeout, at least the abort grace, so that ranks
// that entered the collective at slightly different times still end with
// the error of the rank that saw who was absent.
func TimeoutExtra(timeout, grace time.Duration) time.Duration {
	if grace <= 0 {
		grace = DefaultAbortGrace
	}
	return max(grace, timeout/4)
}

func (e *engine) next() int { return (e.r.Rank + 1) % e.r.Size }
func (e *engine) prev() int { return (e.r.Rank - 1 + e.r.Size) % e.r.Size }

// run executes the collective. A non-nil pre is a local failure found before
// any data moved (bad arguments): the rank then takes part only in the token
// round, so every rank still returns the error.
func (e *engine) run(parent context.Context, pre error) error {
	size, rank := e.r.Size, e.r.Rank
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	e.nWait = 0
	for _, s := range e.sends {
		if s.wait {
			e.nWait++
		}
	}

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stop := make(chan struct{})
	ready := make(chan received, len(e.recvs))
	tokens := make(chan Message, size+1)
	sev := make(chan senderEvent, 2)
	senderDone := make(chan struct{})
	startData := pre == nil
	go e.sender(sctx, startData, stop, ready, tokens, sev, senderDone)

	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	pump := make(chan recvResult, 4)
	pumpDone := make(chan struct{})
	go e.pump(pctx, pump, pumpDone)

	var (
		recvIdx     int
		stopped     = !startData
		ownSent     bool
		ownOK       bool
		tokensShut  bool
		phase1Done  = !startData
		senderGone  bool
		pumpGone    bool
		got         = make([]bool, size)
		nGot        int
		firstFail   *RemoteError // lowest-origin failure seen
		sawStopped  bool
		waitStarted time.Time
		prevEntered bool // the previous rank's KindEnter arrived
		deadline    <-chan time.Time
		extended    bool
	)
	noteFail := func(re *RemoteError) {
		if firstFail == nil || re.Origin < firstFail.Origin {
			firstFail = re
		}
	}
	stopData := func() {
		if !stopped {
			stopped = true
			close(stop)
		}
	}
	push := func(m Message) { tokens <- m } // capacity covers own token + forwards
	pushOwn := func(payload []byte, kind Kind) {
		push(Message{Op: e.op, Kind: kind, Total: e.total, Payload: payload})
		ownSent = true
	}
	// fatalExit stops everything, passes a fatal abort on (unless the next
	// rank is its origin) and returns it. With drain, it first keeps reading
	// (and discarding) what the previous rank still sends in this
	// collective, for at most the grace period, so that rank is not left
	// blocked on a link nobody reads.
	fatalExit := func(re *RemoteError, drain bool) error {
		scancel()
		<-senderDone
		grace := e.grace()
		if e.next() != re.Origin {
			gctx, gcancel := context.WithTimeout(context.WithoutCancel(parent), grace)
			_ = e.r.Next.Send(gctx, Message{Op: e.op, Kind: KindAbort, Total: e.total, Payload: encodeAbort(re, true)})
			gcancel()
		}
		if drain && !pumpGone {
			t := time.NewTimer(grace)
		loop:
			for {
				select {
				case res, ok := <-pump:
					if !ok {
						break loop
					}
					if res.err == nil {
						e.recycle(res.m.Payload)
					}
				case <-t.C:
					break loop
				case <-ctx.Done():
					break loop
				}
			}
			t.Stop()
		}
		pcancel()
		<-pumpDone
		return re
	}
	// Every payload received and not consumed goes back to the link when
	// the collective ends, whatever way (a link that lends its own memory,
	// such as shared memory, needs it back): what the pump still holds,
	// and what waits in ready for a send that will not take it.
	defer func() {
		<-senderDone
		pcancel()
		<-pumpDone
		for res := range pump { // closed by the pump as it exits
			if res.err == nil {
				e.recycle(res.m.Payload)
			}
		}
		for {
			select {
			case in := <-ready:
				if in.payload != nil {
					e.recycle(in.payload)
				}
				continue
			default:
			}
			break
		}
	}()
	// fail records a failure of this rank. A failure after this rank already
	// reported one (or stopped) is a consequence and is dropped; one after it
	// reported success cannot be told to the others in this round, so it ends
	// the collective as fatal.
	fail := func(err error) error {
		re := newLocalError(e.op, rank, err)
		if fatal(err) || ownOK {
			return fatalExit(re, !fatal(err))
		}
		if ownSent {
			return nil
		}
		noteFail(re)
		stopData()
		pushOwn(encodeAbort(re, false), KindAbort)
		return nil
	}
	onEvent := func(ev senderEvent) error {
		if ev.fatal {
			return fatalExit(newLocalError(e.op, rank, ev.err), true)
		}
		if ev.phase1 {
			phase1Done = true
		}
		if ev.err != nil {
			return fail(ev.err)
		}
		return nil
	}
	var onTimeout func() error // set when Ring.Timeout is
	if e.r.Timeout > 0 {
		timer := time.NewTimer(e.r.Timeout)
		defer timer.Stop()
		deadline = timer.C
		onTimeout = func() error {
			if !prevEntered {
				// Nothing of this collective came from the previous rank:
				// it never entered (its first message is KindEnter).
				return fatalExit(newLocalError(e.op, rank, &TimeoutError{Op: e.op, Absent: e.prev(), After: e.r.Timeout,
					Detail: fmt.Sprintf(" (rank %d got nothing of this collective from it)", rank)}), false)
			}
			extra := TimeoutExtra(e.r.Timeout, e.r.AbortGrace)
			if !extended {
				// Wait a little longer for the error of the rank that saw
				// the absent one: it entered at about the same time.
				extended = true
				timer.Reset(extra)
				return nil
			}
			var missing []int
			for q := range size {
				if q != rank && !got[q] {
					missing = append(missing, q)
				}
			}
			return fatalExit(newLocalError(e.op, rank, &TimeoutError{Op: e.op, Absent: -1, After: e.r.Timeout + extra,
				Detail: fmt.Sprintf(": rank %d heard from rank %d but never got the status of ranks %v", rank, e.prev(), missing)}), false)
		}
	}
	if pre != nil {
		if err := fail(fmt.Errorf("rank %d: %w", rank, pre)); err != nil {
			return err
		}
	}

	for {
		if !ownSent && phase1Done && (stopped || recvIdx == len(e.recvs)) {
			pushOwn(encodeDone(rank, stopped), KindDone)
			ownOK = !stopped
		}
		if ownSent && nGot == size-1 && !tokensShut {
			tokensShut = true
			close(tokens)
		}
		if tokensShut && senderGone && pumpGone {
			break
		}
		var senderDoneCh <-chan struct{}
		if !senderGone {
			senderDoneCh = senderDone
		}
		var pumpCh <-chan recvResult
		if !pumpGone {
			pumpCh = pump
		}
		waitStarted = time.Now()
		select {
		case <-ctx.Done():
			return fatalExit(newLocalError(e.op, rank, fmt.Errorf("rank %d: %w", rank, ctx.Err())), false)
		case <-deadline:
			if err := onTimeout(); err != nil {
				return err
			}
		case ev := <-sev:
			if err := onEvent(ev); err != nil {
				return err
			}
		case <-senderDoneCh:
			senderGone = true
			// The sender queued its last events before it exited.
			for drained := false; !drained; {
				select {
				case ev := <-sev:
					if err := onEvent(ev); err != nil {
						return err
					}
				default:
					drained = true
				}
			}
		case res, ok := <-pumpCh:
			if !stopped && recvIdx < len(e.recvs) {
				e.cWait += time.Since(waitStarted)
			}
			if !ok {
				pumpGone = true
				continue
			}
			if res.err != nil {
				return fatalExit(newLocalError(e.op, rank, res.err), false)
			}
			m := res.m
			if m.Op != e.op {
				e.recycle(m.Payload)
				if err := fail(fmt.Errorf("%w: rank %d got a %s message of op %d from rank %d during op %d (replayed or stale)",
					ErrProtocol, rank, kindName(m.Kind), m.Op, e.prev(), e.op)); err != nil {
					return err
				}
				continue
			}
			switch m.Kind {
			case KindEnter:
				if prevEntered {
					if err := fail(fmt.Errorf("%w: rank %d got a second enter message from rank %d in op %d",
						ErrProtocol, rank, e.prev(), e.op)); err != nil {
						return err
					}
				}
				prevEntered = true
			case KindDone, KindAbort:
				t, err := decodeToken(m, size)
				if err == nil && t.fatal && t.origin != rank {
					return fatalExit(t.err, false) // passes it on
				}
				if err == nil && (t.origin == rank || got[t.origin]) {
					err = fmt.Errorf("%w: duplicate status of rank %d", ErrProtocol, t.origin)
				}
				if err != nil {
					return fatalExit(newLocalError(e.op, rank, fmt.Errorf("rank %d: from rank %d: %w", rank, e.prev(), err)), true)
				}
				got[t.origin] = true
				nGot++
				if e.next() != t.origin {
					push(m)
				}
				switch {
				case t.err != nil:
					noteFail(t.err)
				case t.stopped:
					sawStopped = true
				}
				if t.err != nil || t.stopped {
					stopData()
				} else if !stopped && recvIdx < len(e.recvs) && t.origin == e.prev() {
					// Only the previous rank's own Done proves data is
					// missing: its data always precedes it. Another rank's
					// token may overtake data a stopping previous rank
					// never sent, and that rank's own status follows.
					if err := fail(fmt.Errorf("%w: rank %d expected %d more data messages but rank %d finished",
						ErrProtocol, rank, len(e.recvs)-recvIdx, t.origin)); err != nil {
						return err
					}
				}
			default:
				if stopped {
					e.recycle(m.Payload)
					continue // data of a failed collective: discard
				}
				if err := e.check(recvIdx, m); err != nil {
					e.recycle(m.Payload)
					if err := fail(err); err != nil {
						return err
					}
					continue
				}
				t0 := time.Now()
				keep, sum, err := e.job.consume(recvIdx, m)
				e.cConsume += time.Since(t0)
				if !keep {
					e.recycle(m.Payload)
				}
				if err != nil {
					if err := fail(err); err != nil {
						return err
					}
					continue
				}
				in := received{sum: sum}
				if keep && recvIdx < e.nWait {
					in.payload = m.Payload
				} else if keep {
					// The last hop's pieces: no send forwards them.
					e.recycle(m.Payload)
				}
				ready <- in
				recvIdx++
			}
		}
	}
	if firstFail != nil {
		return firstFail
	}
	if sawStopped {
		return newLocalError(e.op, rank, fmt.Errorf("%w: rank %d: a rank stopped but none reported a failure", ErrProtocol, rank))
	}
	return nil
}

// recycle hands a consumed payload back to the receiving link.
func (e *engine) recycle(p []byte) {
	if e.owns != nil && e.owns(p) {
		return // received in place: the job's own memory
	}
	if rc, ok := e.r.Prev.(Recycler); ok && cap(p) > 0 {
		rc.Recycle(p)
	}
}

// check validates a data message against receive step i.
func (e *engine) check(i int, m Message) error {
	rank, from := e.r.Rank, e.prev()
	if i >= len(e.recvs) {
		return fmt.Errorf("%w: rank %d got an extra %s message (hop %d chunk %d sub %d) from rank %d in op %d",
			ErrProtocol, rank, kindName(m.Kind), m.Hop, m.Chunk, m.Sub, from, e.op)
	}
	if e.checkTotal && m.Total != e.total {
		return fmt.Errorf("%w: rank %d has %d values, rank %d has %d (op %d)",
			ErrShapeMismatch, rank, e.total, from, m.Total, e.op)
	}
	s := e.recvs[i]
	if m.Kind != s.kind || m.Hop != s.hop || m.Chunk != s.chunk || m.Sub != s.sub {
		return fmt.Errorf("%w: rank %d expected %s hop %d chunk %d sub %d from rank %d, got %s hop %d chunk %d sub %d (op %d)",
			ErrProtocol, rank, kindName(s.kind), s.hop, s.chunk, s.sub, from,
			kindName(m.Kind), m.Hop, m.Chunk, m.Sub, e.op)
	}
	return nil
}

// sender sends the data steps in order (phase 1), then the tokens the
// controller queues (phase 2) until tokens is closed.
func (e *engine) sender(ctx context.Context, data bool, stop <-chan struct{}, ready <-chan received,
	tokens <-chan Message, ev chan<- senderEvent, done chan<- struct{}) {
	defer close(done)
	send := func(m Message, limit time.Duration) error {
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if limit > 0 {
			sctx, cancel = context.WithTimeout(ctx, limit)
		}
		t0 := time.Now()
		err := e.r.Next.Send(sctx, m)
		e.sWait += time.Since(t0)
		cancel()
		if err != nil {
			if limit > 0 && ctx.Err() == nil && sctx.Err() != nil {
				err = &PeerLostError{Rank: e.next(), Cause: fmt.Errorf("took no status message within %v", limit)}
			} else if ctx.Err() != nil {
				return fmt.Errorf("rank %d: send to rank %d: %w", e.r.Rank, e.next(), ctx.Err())
			}
			return fmt.Errorf("rank %d: send to rank %d: %w", e.r.Rank, e.next(), err)
		}
		return nil
	}
	// First tell the next rank that this rank entered the collective (even
	// with a local failure to report): a rank that never gets this from its
	// previous rank within Ring.Timeout names it as absent.
	if err := send(Message{Op: e.op, Kind: KindEnter, Total: e.total}, 0); err != nil {
		ev <- senderEvent{err: err, fatal: true}
		return
	}
	if data {
		var buildErr error
	loop:
		for i, s := range e.sends {
			var in received
			if s.wait {
				select {
				case in = <-ready:
				case <-stop:
					break loop
				case <-ctx.Done():
					ev <- senderEvent{err: ctx.Err(), fatal: true}
					return
				}
			}
			select {
			case <-stop:
				if in.payload != nil {
					e.recycle(in.payload)
				}
				break loop
			default:
			}
			t0 := time.Now()
			payload, sum, err := e.job.build(i, in.payload, in.sum)
			if err == nil && sum == 0 && len(payload) > 0 {
				sum = kern.UpdateCRC32C(0, payload)
			}
			e.sBuild += time.Since(t0)
			// A payload kept to forward (an allgather's frame) goes back
			// to the link once sent, or at once when it will not be: the
			// link may receive into it again (or, in shared memory, let
			// the peer write there).
			done := func() {
				if in.payload != nil {
					e.recycle(in.payload)
				}
			}
			if err != nil {
				done()
				buildErr = err
				break
			}
			if err := send(Message{Op: e.op, Kind: s.kind, Hop: s.hop, Chunk: s.chunk, Sub: s.sub,
				Total: e.total, Payload: payload, Sum: sum}, 0); err != nil {
				done()
				if !linkDown(err) {
					// The link refused this message but still works (say,
					// a payload over its limit): fail like a codec error.
					buildErr = err
					break
				}
				ev <- senderEvent{err: err, fatal: true}
				return
			}
			e.sWire += int64(len(payload))
			done()
			if e.rawOf != nil {
				e.sRaw += e.rawOf(i)
			}
		}
		ev <- senderEvent{phase1: true, err: buildErr}
	}
	for {
		select {
		case m, ok := <-tokens:
			if !ok {
				return
			}
			// A status message is tiny: a next rank that does not take it
			// within the grace period has stopped reading (it may have
			// ended on a fatal error after this rank's last look at its
			// previous link), so do not wait for it forever.
			if err := send(m, e.grace()); err != nil {
				ev <- senderEvent{err: err, fatal: true}
				return
			}
		case <-ctx.Done():
			ev <- senderEvent{err: ctx.Err(), fatal: true}
			return
		}
	}
}

// pump receives until it has seen the tokens of all other ranks, a fatal
// abort, or an error. Tokens are the last messages of a collective on a
// link, so it never reads a message of the next collective.
//
// Over a LimitedLink it says how large the next message may be: the larger
// of a status message and the next data message this collective expects
// (e.recvMax), so a header announcing more fails before anything of that
// size is allocated.
func (e *engine) pump(ctx context.Context, out chan<- recvResult, done chan<- struct{}) {
	defer close(done)
	defer close(out)
	tokens, data := 0, 0
	lim, limited := e.r.Prev.(LimitedLink)
	placing, canPlace := e.r.Prev.(PlacingLink)
	canPlace = canPlace && e.place != nil
	for tokens < e.r.Size-1 {
		var m Message
		var err error
		if limited {
			bound := math.MaxInt
			if e.recvMax != nil {
				bound = maxTokenPayload
				if data < len(e.recvs) {
					bound = max(bound, e.recvMax(data))
				}
			}
			if canPlace {
				m, err = placing.RecvPlace(ctx, bound, e.place)
			} else {
				m, err = lim.RecvLimit(ctx, bound)
			}
		} else {
			m, err = e.r.Prev.Recv(ctx)
		}
		if err != nil {
			// Any receive error ends the collective as fatal: the link
			// may have lost a message. It keeps its cause (a lost peer,
			// or say gradcodec.ErrBadFrame for a frame the link rejected).
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			err = fmt.Errorf("rank %d: receive from rank %d: %w", e.r.Rank, e.prev(), err)
		}
		select {
		case out <- recvResult{m, err}:
		case <-ctx.Done():
			if err == nil {
				e.recycle(m.Payload)
			}
			return
		}
		if err != nil {
			return
		}
		if m.Op == e.op {
			if isFatalAbort(m) {
				return
			}
			switch m.Kind {
			case KindDone, KindAbort:
				tokens++
			case KindEnter:
			default:
				data++
			}
		}
	}
}
