package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vccl/vccl/ring"
)

// leaveWorker is a started Worker of rank 1 in a world of 4, as far as the
// handling of memberlist's leave events and goodbyes goes: no sockets.
func leaveWorker(t *testing.T, peerTimeout time.Duration) *Worker {
	t.Helper()
	w := &Worker{
		cfg:      Config{Rank: 1, WorldSize: 4, PeerTimeout: peerTimeout},
		log:      log.New(io.Discard, "", 0),
		metrics:  &Metrics{rank: 1, size: 4},
		ranks:    map[string]int{"rank-0": 0, "rank-1": 1, "rank-2": 2, "rank-3": 3},
		warned:   make(map[string]bool),
		byes:     make(map[int]bool),
		lostCh:   make(chan struct{}),
		memberCh: make(chan struct{}, 1),
		nextCh:   make(chan *link, 1),
		started:  true,
	}
	w.keys.job = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() { w.Close() })
	return w
}

// goodbye is the message rank sends every member before it leaves.
func goodbye(w *Worker, rank int) []byte {
	msg := append([]byte(nil), byePrefix...)
	msg = append(msg, w.keys.job[:]...)
	return binary.LittleEndian.AppendUint32(msg, uint32(rank))
}

// lostCause waits up to d for w to report a lost peer and returns it.
func lostCause(t *testing.T, w *Worker, d time.Duration) *ring.PeerLostError {
	t.Helper()
	select {
	case <-w.lostCh:
	case <-time.After(d):
		t.Fatalf("no peer reported lost within %v", d)
	}
	var pl *ring.PeerLostError
	if !errors.As(w.Err(), &pl) {
		t.Fatalf("Err() = %v, want a *ring.PeerLostError", w.Err())
	}
	return pl
}

var rank3Node = &memberlist.Node{Name: "rank-3", Addr: net.IPv4(127, 0, 0, 1), Port: 7946}

// TestGoodbyeAfterLeave: memberlist may hand a rank's leave to NotifyLeave
// before the goodbye the rank sent first reaches NotifyMsg (they arrive on
// different connections, handled by different goroutines). The departure
// is still a planned one: reported only after the grace period, as having
// left, not at once as dead. CI once failed on this: a rank that had
// finished the job's last collective left, and a rank still receiving its
// last piece from another rank failed with "declared rank 3 dead".
func TestGoodbyeAfterLeave(t *testing.T) {
	w := leaveWorker(t, 2*time.Second)
	(*mlEvents)(w).NotifyLeave(rank3Node)
	if err := w.Err(); err != nil {
		t.Fatalf("rank lost at once, before a late goodbye could count: %v", err)
	}
	(*mlDelegate)(w).NotifyMsg(goodbye(w, 3))
	// byeGrace (200 ms) and then half of PeerTimeout (1 s) from the leave.
	wantLeft(t, w, time.Now())
}

// wantLeft waits for w to report rank 3 lost and checks that it counted as
// having left the job, no sooner than half of PeerTimeout after start.
func wantLeft(t *testing.T, w *Worker, start time.Time) {
	t.Helper()
	pl := lostCause(t, w, 10*time.Second)
	if pl.Rank != 3 || !strings.Contains(pl.Cause.Error(), "left the job") {
		t.Errorf("lost %v, want rank 3 having left the job", pl)
	}
	if el := time.Since(start); el < w.cfg.PeerTimeout/2 {
		t.Errorf("reported after %v, want at least half of PeerTimeout (%v)", el, w.cfg.PeerTimeout/2)
	}
}

// TestLeaveWithoutGoodbyeIsDeath: a leave that no goodbye explains is a
// dead rank, reported once byeGrace has passed, well before the grace a
// planned departure gets.
func TestLeaveWithoutGoodbyeIsDeath(t *testing.T) {
	w := leaveWorker(t, 4*time.Second)
	start := time.Now()
	(*mlEvents)(w).NotifyLeave(rank3Node)
	pl := lostCause(t, w, 10*time.Second)
	el := time.Since(start)
	if pl.Rank != 3 || !strings.Contains(pl.Cause.Error(), "declared rank 3") || !strings.Contains(pl.Cause.Error(), "dead") {
		t.Errorf("lost %v, want rank 3 declared dead", pl)
	}
	if el < w.byeGrace() || el >= w.cfg.PeerTimeout/2 {
		t.Errorf("reported after %v, want between byeGrace (%v) and half of PeerTimeout (%v)", el, w.byeGrace(), w.cfg.PeerTimeout/2)
	}
}

// TestGoodbyeBeforeLeave: the usual order, a planned departure reported
// after half of PeerTimeout.
func TestGoodbyeBeforeLeave(t *testing.T) {
	w := leaveWorker(t, 2*time.Second)
	(*mlDelegate)(w).NotifyMsg(goodbye(w, 3))
	start := time.Now()
	(*mlEvents)(w).NotifyLeave(rank3Node)
	wantLeft(t, w, start)
}

// TestLeaveAfterCloseIgnored: once this rank closes, departures are
// expected and nothing is reported, also not by a pending grace timer.
func TestLeaveAfterCloseIgnored(t *testing.T) {
	w := leaveWorker(t, time.Second)
	(*mlEvents)(w).NotifyLeave(rank3Node)
	w.Close()
	time.Sleep(2 * w.byeGrace())
	if err := w.Err(); err != nil {
		t.Errorf("after Close: %v", err)
	}
}
