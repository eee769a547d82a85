package worker

import (
	"context"
	"crypto/hmac"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/memberlist"

	"github.com/vccl/vccl/ring"
)

// linkPath is the HTTP path of the websocket link endpoint.
const linkPath = "/vccl/link"

// dialHook, set only by tests, rewrites the address a rank dials for its
// predecessor's link (to route it through a proxy that can stall).
var dialHook func(from, to int, addr string) string

// Worker is one running rank: its membership, its two ring links and its
// failure detector. Create it with Start; all methods are safe for
// concurrent use.
type Worker struct {
	cfg     Config
	keys    jobKeys
	log     *log.Logger
	metrics *Metrics

	ctx    context.Context // ends when Close begins
	cancel context.CancelFunc
	wg     sync.WaitGroup // server goroutines

	mu       sync.Mutex
	closing  bool
	ranks    map[string]int // memberlist node name -> rank, once the world is complete
	warned   map[string]bool
	lostErr  *ring.PeerLostError
	timers   []*time.Timer
	nextBusy bool // a link from the successor was accepted
	// startAbort is an inconsistency of the world that another rank found
	// while starting; it ends this rank's Start too.
	startAbort error
	byes       map[int]bool // ranks that said goodbye before leaving
	started    bool

	lostCh   chan struct{} // closed when lostErr is set
	memberCh chan struct{} // capacity 1: the member list changed
	nextCh   chan *link    // capacity 1: the accepted successor link

	ml       *memberlist.Memberlist
	bcast    *memberlist.TransmitLimitedQueue
	linkLn   net.Listener
	linkSrv  *http.Server
	linkAddr string
	nonces   nonceCache
	next     *link
	prev     *link

	metricsLn  net.Listener
	metricsSrv *http.Server

	closeOnce sync.Once
	closeErr  error
}

// Start joins the job described by cfg and returns once this rank is
// linked to both ring neighbours, or with an error that names the cause
// (and the ranks involved) when the configuration is bad, the world is
// inconsistent, JoinTimeout expires or ctx ends. ctx bounds only the start;
// the Worker runs until Close.
func Start(ctx context.Context, cfg Config) (*Worker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  &Metrics{rank: cfg.Rank, size: cfg.WorldSize},
		warned:   make(map[string]bool),
		byes:     make(map[int]bool),
		lostCh:   make(chan struct{}),
		memberCh: make(chan struct{}, 1),
		nextCh:   make(chan *link, 1),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if err := w.start(ctx); err != nil {
		w.Close()
		return nil, err
	}
	w.mu.Lock()
	w.started = true
	w.mu.Unlock()
	return w, nil
}

func (w *Worker) start(ctx context.Context) error {
	if w.cfg.MetricsAddr != "" {
		if err := w.serveMetrics(); err != nil {
			return err
		}
	}
	if w.cfg.WorldSize == 1 {
		w.ranks = map[string]int{}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.JoinTimeout)
	defer cancel()

	var err error
	if w.keys, err = deriveKeys(w.cfg.Secret); err != nil {
		return err
	}
	if err := w.listenLinks(); err != nil {
		return err
	}
	name := fmt.Sprintf("vccl-%s-r%d-%s", w.keys.jobHex()[:8], w.cfg.Rank, newNonce()[:8])
	w.bcast = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: func() int { return w.cfg.WorldSize }}
	ml, err := memberlist.Create(w.memberConfig(name))
	if err != nil {
		return fmt.Errorf("worker: rank %d: start memberlist on %s:%d: %w", w.cfg.Rank, w.cfg.BindAddr, w.cfg.BindPort, err)
	}
	w.mu.Lock()
	w.ml = ml
	w.mu.Unlock()

	wd, err := w.waitWorld(ctx)
	if err != nil {
		return err
	}
	ranks := make(map[string]int, len(wd.byRank))
	for r, n := range wd.byRank {
		ranks[n.Name] = r
	}
	w.mu.Lock()
	w.ranks = ranks
	w.mu.Unlock()

	nextRank := (w.cfg.Rank + 1) % w.cfg.WorldSize
	prevRank := (w.cfg.Rank - 1 + w.cfg.WorldSize) % w.cfg.WorldSize
	// Data flows from a rank to its successor over the connection the
	// successor dialled: the sender is the websocket server, whose frames
	// are not masked (see link).
	prev, err := w.dial(ctx, prevRank, wd.meta[prevRank].Link)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.prev = prev
	w.mu.Unlock()
	select {
	case n := <-w.nextCh:
		w.mu.Lock()
		w.next = n
		w.mu.Unlock()
	case <-ctx.Done():
		return fmt.Errorf("worker: rank %d: rank %d (successor) did not open its link within the join timeout %v: %w", w.cfg.Rank, nextRank, w.cfg.JoinTimeout, context.Cause(ctx))
	}
	// A rank lost while this one was linking fails Start.
	if err := w.lost(); err != nil {
		return fmt.Errorf("worker: rank %d: start: %w", w.cfg.Rank, err)
	}
	return nil
}

// waitWorld joins the seeds and waits until every rank is present once.
func (w *Worker) waitWorld(ctx context.Context) (world, error) {
	// Join again every second while ranks are missing: a seed list that
	// holds this rank's own address succeeds at once without reaching the
	// others.
	joined := len(w.cfg.Join) == 0
	var joinErr error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	nextJoin := time.Now()
	for {
		if len(w.cfg.Join) > 0 && !time.Now().Before(nextJoin) {
			if _, err := w.ml.Join(w.cfg.Join); err != nil {
				joinErr = err
				nextJoin = time.Now().Add(250 * time.Millisecond)
			} else {
				joined = true
				nextJoin = time.Now().Add(time.Second)
			}
		}
		w.mu.Lock()
		abort := w.startAbort
		w.mu.Unlock()
		if abort != nil {
			return world{}, abort
		}
		wd, err := w.checkWorld(w.ml.Members())
		if err != nil {
			w.tellAbort(err)
			return wd, err
		}
		if len(wd.missing) == 0 {
			return wd, nil
		}
		select {
		case <-w.memberCh:
		case <-tick.C:
		case <-ctx.Done():
			msg := fmt.Sprintf("worker: rank %d: %d of %d ranks present after %v, missing rank(s) %s",
				w.cfg.Rank, w.cfg.WorldSize-len(wd.missing), w.cfg.WorldSize, w.cfg.JoinTimeout, missingList(wd.missing))
			if !joined {
				return wd, fmt.Errorf("%s; could not join %v (same secret on every rank?): %w", msg, w.cfg.Join, joinErr)
			}
			return wd, fmt.Errorf("%s: %w", msg, context.Cause(ctx))
		}
	}
}

// listenLinks starts the websocket link listener on BindAddr:0.
func (w *Worker) listenLinks() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(w.cfg.BindAddr, "0"))
	if err != nil {
		return fmt.Errorf("worker: rank %d: listen for links: %w", w.cfg.Rank, err)
	}
	w.linkLn = ln
	w.linkAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc(linkPath, w.acceptLink)
	w.linkSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(discardWriter{}, "", 0),
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.linkSrv.Serve(ln)
	}()
	return nil
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

var upgrader = websocket.Upgrader{
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 64 << 10,
	// Links are authenticated by HMAC, not by origin; no browser talks to
	// this endpoint.
	CheckOrigin: func(*http.Request) bool { return true },
}

// acceptLink authenticates and upgrades the successor's link request. It
// refuses a request without credentials with 401 and one with wrong
// credentials, from a rank other than the successor, or replayed, with
// 403, and logs each refusal.
func (w *Worker) acceptLink(rw http.ResponseWriter, r *http.Request) {
	refuse := func(code int, why string) {
		w.metrics.LinksRefused.Add(1)
		w.logf("refused link request from %s: %s", r.RemoteAddr, why)
		http.Error(rw, "vccl: "+why, code)
	}
	h := r.Header
	job, fromS, toS, tS, nonce, auth := h.Get(hdrJob), h.Get(hdrFrom), h.Get(hdrTo), h.Get(hdrTime), h.Get(hdrNonce), h.Get(hdrAuth)
	offer := h.Get(hdrShm)
	if auth == "" || job == "" || fromS == "" || toS == "" || tS == "" || nonce == "" {
		refuse(http.StatusUnauthorized, "no job credentials (missing secret)")
		return
	}
	from, err1 := strconv.Atoi(fromS)
	to, err2 := strconv.Atoi(toS)
	ts, err3 := strconv.ParseInt(tS, 10, 64)
	mac, err4 := hex.DecodeString(auth)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		refuse(http.StatusForbidden, "malformed credentials")
		return
	}
	if job != w.keys.jobHex() || !hmac.Equal(mac, w.keys.linkMAC("dial", from, to, ts, nonce, offer)) {
		refuse(http.StatusForbidden, fmt.Sprintf("wrong secret (claimed rank %s)", fromS))
		return
	}
	now := time.Now()
	if d := now.Sub(time.Unix(0, ts)); d > authSkew || d < -authSkew {
		refuse(http.StatusForbidden, fmt.Sprintf("rank %d's timestamp is %v off (clock skew or replay)", from, d.Round(time.Second)))
		return
	}
	if !w.nonces.fresh(nonce, now) {
		refuse(http.StatusForbidden, fmt.Sprintf("replayed credentials of rank %d", from))
		return
	}
	nextRank := (w.cfg.Rank + 1) % w.cfg.WorldSize
	if to != w.cfg.Rank || from != nextRank {
		refuse(http.StatusForbidden, fmt.Sprintf("rank %d asked for a link to rank %d; this is rank %d and accepts only rank %d", from, to, w.cfg.Rank, nextRank))
		return
	}
	w.mu.Lock()
	busy, closing := w.nextBusy, w.closing
	if !busy && !closing {
		w.nextBusy = true
		w.wg.Add(1) // Close waits for this handler to hand its link over
		defer w.wg.Done()
	}
	w.mu.Unlock()
	if closing {
		refuse(http.StatusServiceUnavailable, "worker is closing")
		return
	}
	if busy {
		refuse(http.StatusConflict, fmt.Sprintf("rank %d already has a link to this rank", from))
		return
	}
	// The successor offers shared memory when it runs on this host.
	var shm *shmRegion
	answer := ""
	if offer != "" && w.cfg.SharedMemBytes > 0 {
		region, err := openShmOffer(offer)
		switch {
		case err == nil:
			shm, answer = region, "ok"
		case err != errShmElsewhere:
			w.logf("link from rank %d uses its socket: shared memory offered but not usable: %v", from, err)
		}
	}
	resp := http.Header{}
	if answer != "" {
		resp.Set(hdrShm, answer)
	}
	resp.Set(hdrProof, hex.EncodeToString(w.keys.linkMAC("accept", from, to, ts, nonce, answer)))
	ws, err := upgrader.Upgrade(rw, r, resp)
	if err != nil {
		w.mu.Lock()
		w.nextBusy = false
		w.mu.Unlock()
		if shm != nil {
			shm.unmap()
		}
		w.logf("upgrade of rank %d's link failed: %v", from, err)
		return
	}
	l := newLink(w, from, "next", ws, shm)
	select {
	case w.nextCh <- l:
	default: // cannot happen: nextBusy admits one link
		l.shutdown()
	}
}

// dial opens the authenticated link to the predecessor, retrying refused
// connections until ctx ends; an authentication refusal is final.
func (w *Worker) dial(ctx context.Context, to int, addr string) (*link, error) {
	d := websocket.Dialer{
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  64 << 10,
		HandshakeTimeout: w.cfg.JoinTimeout,
	}
	if dialHook != nil {
		addr = dialHook(w.cfg.Rank, to, addr)
	}
	url := "ws://" + addr + linkPath
	// Offer this link's sender a shared-memory ring; it takes it when it
	// runs on this host. The memfd stays open until the answer is in.
	var offer *shmOffer
	if w.cfg.SharedMemBytes > 0 && localAddr(addr) {
		o, err := newShmOffer(w.cfg.SharedMemBytes)
		switch {
		case err == nil:
			offer = o
		case err != errNoShm:
			w.logf("link to rank %d uses its socket: no shared memory to offer: %v", to, err)
		}
	}
	offerText := ""
	if offer != nil {
		offerText = offer.text
	}
	taken := false
	defer func() {
		if offer != nil && !taken {
			offer.drop()
		}
	}()
	for attempt := 0; ; attempt++ {
		ts := time.Now().UnixNano()
		nonce := newNonce()
		h := http.Header{}
		h.Set(hdrJob, w.keys.jobHex())
		h.Set(hdrFrom, itoa(w.cfg.Rank))
		h.Set(hdrTo, itoa(to))
		h.Set(hdrTime, strconv.FormatInt(ts, 10))
		h.Set(hdrNonce, nonce)
		if offerText != "" {
			h.Set(hdrShm, offerText)
		}
		h.Set(hdrAuth, hex.EncodeToString(w.keys.linkMAC("dial", w.cfg.Rank, to, ts, nonce, offerText)))
		ws, resp, err := d.DialContext(ctx, url, h)
		if err == nil {
			answer := resp.Header.Get(hdrShm)
			proof, perr := hex.DecodeString(resp.Header.Get(hdrProof))
			if perr != nil || !hmac.Equal(proof, w.keys.linkMAC("accept", w.cfg.Rank, to, ts, nonce, answer)) {
				ws.Close()
				return nil, fmt.Errorf("worker: rank %d: link to rank %d at %s: the listener did not prove it holds the job secret", w.cfg.Rank, to, addr)
			}
			var shm *shmRegion
			if offer != nil && answer == "ok" {
				offer.closeFd()
				shm, taken = offer.region, true
			}
			return newLink(w, to, "prev", ws, shm), nil
		}
		if resp != nil {
			return nil, fmt.Errorf("worker: rank %d: link to rank %d at %s refused: %s", w.cfg.Rank, to, addr, resp.Status)
		}
		t := time.NewTimer(time.Duration(min(attempt+1, 10)) * 50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("worker: rank %d: link to rank %d at %s: %w (last attempt: %v)", w.cfg.Rank, to, addr, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// sayBye tells every member that this rank is about to leave on purpose.
func (w *Worker) sayBye(ml *memberlist.Memberlist) {
	msg := append([]byte(nil), byePrefix...)
	msg = append(msg, w.keys.job[:]...)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(w.cfg.Rank))
	w.sendAll(ml, msg)
}

// sendAll sends msg reliably to every other member, in parallel.
func (w *Worker) sendAll(ml *memberlist.Memberlist, msg []byte) {
	self := ml.LocalNode().Name
	var wg sync.WaitGroup
	for _, n := range ml.Members() {
		if n.Name == self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ml.SendReliable(n, msg)
		}()
	}
	wg.Wait()
}

// tellAbort sends a world inconsistency found while starting to every
// member, so that all ranks fail with the same cause rather than waiting
// for ranks that are about to leave.
func (w *Worker) tellAbort(cause error) {
	w.sendAll(w.ml, w.encodeAbort(cause))
}

// peerLost records the first lost peer of the job and wakes every pending
// Send and Recv; with gossip it also tells the other ranks.
func (w *Worker) peerLost(e *ring.PeerLostError, gossip bool) {
	w.mu.Lock()
	if w.closing || w.lostErr != nil || w.ranks == nil {
		w.mu.Unlock()
		return
	}
	w.lostErr = e
	close(w.lostCh)
	w.mu.Unlock()
	w.metrics.PeersLost.Add(1)
	w.logf("%v", e)
	if gossip && w.bcast != nil {
		w.bcast.QueueBroadcast(lossReport(w.encodeLoss(e)))
	}
}

// leaveLater reports rank lost after half of PeerTimeout, giving the frames
// it sent before leaving time to arrive.
func (w *Worker) leaveLater(rank int, cause error) {
	w.after(w.cfg.PeerTimeout/2, func() {
		w.peerLost(&ring.PeerLostError{Rank: rank, Cause: cause}, false)
	})
}

// after runs f after d unless the Worker closes first.
func (w *Worker) after(d time.Duration, f func()) {
	t := time.AfterFunc(d, f)
	w.mu.Lock()
	if w.closing {
		t.Stop()
	} else {
		w.timers = append(w.timers, t)
	}
	w.mu.Unlock()
}

// lost returns the lost-peer error, or nil.
func (w *Worker) lost() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lostErr == nil {
		return nil
	}
	return w.lostErr
}

// Err returns a *ring.PeerLostError once a rank of the job is lost, nil
// while the job is healthy.
func (w *Worker) Err() error { return w.lost() }

// logf writes one line to the Logger.
func (w *Worker) logf(format string, args ...any) { w.log.Printf(format, args...) }

// warnOnce logs a warning the first time key is seen.
func (w *Worker) warnOnce(key, format string, args ...any) {
	w.mu.Lock()
	seen := w.warned[key]
	w.warned[key] = true
	w.mu.Unlock()
	if !seen {
		w.logf("warning: "+format, args...)
	}
}

// Rank returns this process's rank.
func (w *Worker) Rank() int { return w.cfg.Rank }

// Size returns the world size.
func (w *Worker) Size() int { return w.cfg.WorldSize }

// Next returns the link to rank (Rank+1)%Size; nil when Size is 1.
func (w *Worker) Next() ring.Link {
	if w.next == nil {
		return nil
	}
	return w.next
}

// Prev returns the link from rank (Rank-1+Size)%Size; nil when Size is 1.
func (w *Worker) Prev() ring.Link {
	if w.prev == nil {
		return nil
	}
	return w.prev
}

// Metrics returns the counters of this worker; collective adds its own
// through Metrics.Observe.
func (w *Worker) Metrics() *Metrics { return w.metrics }

// MemberAddr returns the host:port of this rank's memberlist, which other
// ranks may put in Config.Join; empty when Size is 1.
func (w *Worker) MemberAddr() string {
	if w.ml == nil {
		return ""
	}
	return w.ml.LocalNode().Address()
}

// MetricsAddr returns the address the metrics server listens on, or "".
func (w *Worker) MetricsAddr() string {
	if w.metricsLn == nil {
		return ""
	}
	return w.metricsLn.Addr().String()
}

// Close flushes the frames already accepted by Send, closes both links with
// a websocket close handshake, leaves memberlist and waits for every
// goroutine of the worker. Pending Send and Recv calls return ErrClosed. It
// is idempotent and safe to call concurrently.
func (w *Worker) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		for _, t := range w.timers {
			t.Stop()
		}
		next, prev, ml, linked := w.next, w.prev, w.ml, w.ranks != nil
		w.mu.Unlock()
		w.cancel()
		var wg sync.WaitGroup
		if ml != nil && linked {
			wg.Add(1)
			go func() { defer wg.Done(); w.sayBye(ml) }()
		}
		for _, l := range []*link{next, prev} {
			if l != nil {
				wg.Add(1)
				go func() { defer wg.Done(); l.shutdown() }()
			}
		}
		wg.Wait()
		var errs []error
		if ml != nil {
			// The goodbyes already told everyone; Leave only speeds up the
			// gossip and times out when no member is left to hear it, so its
			// error says nothing about this rank.
			ml.Leave(min(w.cfg.PeerTimeout/4, 250*time.Millisecond))
			if err := ml.Shutdown(); err != nil {
				errs = append(errs, fmt.Errorf("shut down memberlist: %w", err))
			}
		}
		if w.linkSrv != nil {
			w.linkSrv.Close()
		}
		if w.metricsSrv != nil {
			w.metricsSrv.Close()
		}
		w.wg.Wait()
		// A successor link accepted while Start was failing.
		select {
		case l := <-w.nextCh:
			l.shutdown()
		default:
		}
		if len(errs) > 0 {
			w.closeErr = fmt.Errorf("worker: rank %d: close: %w", w.cfg.Rank, errors.Join(errs...))
		}
	})
	return w.closeErr
}
