package worker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vccl/vccl/ring"
)

// nodeMeta is what every rank publishes in its memberlist node meta.
type nodeMeta struct {
	V     int    `json:"v"`
	Job   string `json:"job"`
	Rank  int    `json:"rank"`
	World int    `json:"world"`
	Link  string `json:"link"` // host:port of the websocket link listener
}

const metaVersion = 1

// memberConfig builds the memberlist configuration: DefaultLocalConfig with
// probing and suspicion scaled so that a dead rank is declared within about
// 0.7 of PeerTimeout.
func (w *Worker) memberConfig(name string) *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.Name = name
	c.BindAddr = w.cfg.BindAddr
	c.BindPort = w.cfg.BindPort
	c.AdvertiseAddr = w.cfg.BindAddr
	c.AdvertisePort = w.cfg.BindPort
	c.SecretKey = w.keys.gossip
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	c.Delegate = (*mlDelegate)(w)
	c.Events = (*mlEvents)(w)
	c.LogOutput = &mlLog{w: w}

	// Every rank is some rank's ring neighbour, so the links (deadlines and
	// closed connections, gossiped at once) notice most losses first;
	// memberlist is the backstop and errs on the side of patience: probe
	// every PeerTimeout/10, wait as long for an ack, and keep a rank
	// suspect for half of PeerTimeout (memberlist's suspicion timeout is
	// SuspicionMult * max(1, log10(n)) * ProbeInterval; it never grows
	// here). Probe, suspicion and gossip together stay within PeerTimeout.
	pt := w.cfg.PeerTimeout
	probe := min(max(pt/10, 20*time.Millisecond), time.Second)
	c.ProbeInterval = probe
	c.ProbeTimeout = probe
	c.TCPTimeout = max(probe, 500*time.Millisecond)
	scale := math.Max(1, math.Log10(float64(w.cfg.WorldSize)))
	c.SuspicionMult = max(2, int(0.5*float64(pt)/(scale*float64(probe))))
	c.SuspicionMaxTimeoutMult = 1
	c.GossipInterval = min(c.GossipInterval, probe)
	return c
}

// world is the outcome of one look at the member list.
type world struct {
	byRank  map[int]*memberlist.Node
	meta    map[int]nodeMeta
	missing []int
}

// checkWorld reads the members' meta. A member of this job that claims a
// rank outside the world, a different world size, or a rank another member
// already claims is a fatal error naming the ranks; missing ranks are only
// reported.
func (w *Worker) checkWorld(members []*memberlist.Node) (world, error) {
	wd := world{byRank: make(map[int]*memberlist.Node), meta: make(map[int]nodeMeta)}
	for _, n := range members {
		var m nodeMeta
		if err := json.Unmarshal(n.Meta, &m); err != nil || m.V != metaVersion {
			w.warnOnce("meta "+n.Name, "ignoring memberlist node %s at %s: its meta is not a vccl rank's (%q)", n.Name, n.Address(), n.Meta)
			continue
		}
		if m.Job != w.keys.jobHex() {
			w.warnOnce("job "+n.Name, "ignoring memberlist node %s at %s of job %s (this job is %s)", n.Name, n.Address(), m.Job, w.keys.jobHex())
			continue
		}
		if m.World != w.cfg.WorldSize {
			return wd, fmt.Errorf("worker: rank %d: rank %d (%s at %s) says the world size is %d, this rank says %d", w.cfg.Rank, m.Rank, n.Name, n.Address(), m.World, w.cfg.WorldSize)
		}
		if m.Rank < 0 || m.Rank >= w.cfg.WorldSize {
			return wd, fmt.Errorf("worker: rank %d: member %s at %s claims rank %d, outside 0..%d", w.cfg.Rank, n.Name, n.Address(), m.Rank, w.cfg.WorldSize-1)
		}
		if o, dup := wd.byRank[m.Rank]; dup {
			a, b := o, n
			if a.Name > b.Name {
				a, b = b, a
			}
			return wd, fmt.Errorf("worker: rank %d: duplicate rank %d: claimed by %s at %s and by %s at %s", w.cfg.Rank, m.Rank, a.Name, a.Address(), b.Name, b.Address())
		}
		wd.byRank[m.Rank] = n
		wd.meta[m.Rank] = m
	}
	for r := range w.cfg.WorldSize {
		if _, ok := wd.byRank[r]; !ok {
			wd.missing = append(wd.missing, r)
		}
	}
	return wd, nil
}

// mlDelegate is the Worker seen as a memberlist.Delegate.
type mlDelegate Worker

// NodeMeta publishes this rank's nodeMeta.
func (d *mlDelegate) NodeMeta(limit int) []byte {
	w := (*Worker)(d)
	b, _ := json.Marshal(nodeMeta{V: metaVersion, Job: w.keys.jobHex(), Rank: w.cfg.Rank, World: w.cfg.WorldSize, Link: w.linkAddr})
	if len(b) > limit {
		return nil
	}
	return b
}

// Loss reports gossiped between ranks: prefix, job id, lost rank, reporter,
// cause text.
var lossPrefix = []byte("vccl-lost\x00")

// NotifyMsg receives loss reports and start aborts from other ranks. It
// must not block.
func (d *mlDelegate) NotifyMsg(b []byte) {
	w := (*Worker)(d)
	if bytes.HasPrefix(b, byePrefix) && len(b) == len(byePrefix)+12 {
		b = b[len(byePrefix):]
		if [8]byte(b[:8]) != w.keys.job {
			return
		}
		w.mu.Lock()
		w.byes[int(binary.LittleEndian.Uint32(b[8:]))] = true
		w.mu.Unlock()
		return
	}
	if bytes.HasPrefix(b, abortPrefix) && len(b) >= len(abortPrefix)+12 {
		b = b[len(abortPrefix):]
		if [8]byte(b[:8]) != w.keys.job {
			return
		}
		from := int(binary.LittleEndian.Uint32(b[8:]))
		w.mu.Lock()
		if w.startAbort == nil && w.ranks == nil {
			w.startAbort = fmt.Errorf("worker: rank %d: rank %d aborted the start: %s", w.cfg.Rank, from, b[12:])
		}
		w.mu.Unlock()
		w.memberChanged()
		return
	}
	if !bytes.HasPrefix(b, lossPrefix) || len(b) < len(lossPrefix)+16 {
		return
	}
	b = b[len(lossPrefix):]
	if [8]byte(b[:8]) != w.keys.job {
		return
	}
	lost := int(binary.LittleEndian.Uint32(b[8:]))
	from := int(binary.LittleEndian.Uint32(b[12:]))
	if lost < 0 || lost >= w.cfg.WorldSize || lost == w.cfg.Rank {
		return
	}
	w.peerLost(&ring.PeerLostError{Rank: lost, Cause: fmt.Errorf("reported by rank %d: %s", from, b[16:])}, false)
}

// GetBroadcasts hands memberlist the queued loss reports.
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.bcast.GetBroadcasts(overhead, limit)
}

// LocalState is unused.
func (d *mlDelegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState is unused.
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool) {}

// Goodbyes sent to every member before a rank leaves on purpose: prefix,
// job id, rank.
var byePrefix = []byte("vccl-bye\x00")

// Start aborts sent to every member: prefix, job id, reporter, cause text.
var abortPrefix = []byte("vccl-abort\x00")

// encodeAbort builds the message telling the other ranks why this one
// gives up starting.
func (w *Worker) encodeAbort(cause error) []byte {
	b := append([]byte(nil), abortPrefix...)
	b = append(b, w.keys.job[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(w.cfg.Rank))
	return append(b, cause.Error()...)
}

// lossReport is a memberlist.Broadcast of one lost rank.
type lossReport []byte

func (lossReport) Invalidates(memberlist.Broadcast) bool { return false }
func (r lossReport) Message() []byte                     { return r }
func (lossReport) Finished()                             {}

// encodeLoss builds the gossip message reporting e.
func (w *Worker) encodeLoss(e *ring.PeerLostError) []byte {
	b := append([]byte(nil), lossPrefix...)
	b = append(b, w.keys.job[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(e.Rank))
	b = binary.LittleEndian.AppendUint32(b, uint32(w.cfg.Rank))
	cause := fmt.Sprint(e.Cause)
	if len(cause) > 200 {
		cause = cause[:200]
	}
	return append(b, cause...)
}

// mlEvents is the Worker seen as a memberlist.EventDelegate. Its methods
// must not block.
type mlEvents Worker

// NotifyJoin wakes Start; after Start a newcomer is only logged.
func (e *mlEvents) NotifyJoin(n *memberlist.Node) {
	w := (*Worker)(e)
	w.memberChanged()
	w.mu.Lock()
	started := w.ranks != nil
	w.mu.Unlock()
	if started {
		w.logf("warning: member %s at %s joined after the world was complete; ignored", n.Name, n.Address())
	}
}

// NotifyUpdate wakes Start.
func (e *mlEvents) NotifyUpdate(n *memberlist.Node) { (*Worker)(e).memberChanged() }

// NotifyLeave turns a departed rank of a started world into a lost peer: at
// once when memberlist declared it dead, after a grace period when it said
// goodbye first (its last frames may still be on their way around the
// ring).
func (e *mlEvents) NotifyLeave(n *memberlist.Node) {
	w := (*Worker)(e)
	w.memberChanged()
	w.mu.Lock()
	rank, ok := w.ranks[n.Name]
	closing, bye := w.closing, w.byes[rank]
	w.mu.Unlock()
	if !ok || closing {
		return
	}
	// n.State is not reliable here (memberlist passes a stale copy), so a
	// planned leave is told apart by the goodbye sent before it.
	left := fmt.Errorf("rank %d (%s) left the job", rank, n.Address())
	if bye {
		w.leaveLater(rank, left)
		return
	}
	// The goodbye comes over a stream connection, the leave as gossip
	// handled by another goroutine, so a busy rank may see the leave
	// first: wait byeGrace for the goodbye before calling the rank dead.
	dead := &ring.PeerLostError{Rank: rank, Cause: fmt.Errorf("memberlist declared rank %d (%s) dead", rank, n.Address())}
	w.after(w.byeGrace(), func() {
		w.mu.Lock()
		bye := w.byes[rank]
		w.mu.Unlock()
		if bye {
			w.leaveLater(rank, left)
			return
		}
		w.peerLost(dead, false)
	})
}

// byeGrace is how long a leave without a goodbye waits for one: a tenth of
// PeerTimeout, at most 250 ms. A rank memberlist declares dead has been
// suspect for far longer already.
func (w *Worker) byeGrace() time.Duration { return min(w.cfg.PeerTimeout/10, 250*time.Millisecond) }

// memberChanged wakes a waiting Start without blocking.
func (w *Worker) memberChanged() {
	select {
	case w.memberCh <- struct{}{}:
	default:
	}
}

// mlLog forwards memberlist's warnings and errors to the Logger and drops
// its debug and info lines.
type mlLog struct {
	w   *Worker
	buf []byte
}

var _ io.Writer = (*mlLog)(nil)

func (l *mlLog) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		for _, lvl := range []string{"[WARN] ", "[ERR] "} {
			if j := strings.Index(line, lvl); j >= 0 {
				l.w.mu.Lock()
				closing := l.w.closing
				l.w.mu.Unlock()
				if !closing {
					l.w.logf("%s%s", strings.ToLower(strings.Trim(lvl, "[] ")), ": "+line[j+len(lvl):])
				}
				break
			}
		}
	}
	if len(l.buf) > 64<<10 {
		l.buf = l.buf[:0]
	}
	return len(p), nil
}

// missingList prints ranks as "2, 5".
func missingList(rs []int) string {
	s := slices.Clone(rs)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = itoa(r)
	}
	return strings.Join(parts, ", ")
}
