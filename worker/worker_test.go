package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/memberlist"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
)

func TestStartRejectsBadConfig(t *testing.T) {
	good := Config{Rank: 1, WorldSize: 4, Secret: []byte("s"), Join: []string{"127.0.0.1:7000"}}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"WorldSize", func(c *Config) { c.WorldSize = 0 }},
		{"Rank", func(c *Config) { c.Rank = 4 }},
		{"Rank", func(c *Config) { c.Rank = -1 }},
		{"Secret", func(c *Config) { c.Secret = nil }},
		{"BindPort", func(c *Config) { c.BindPort = 70000 }},
		{"BindAddr", func(c *Config) { c.BindAddr = "localhost-ish" }},
		{"BindAddr", func(c *Config) { c.BindAddr = "0.0.0.0" }},
		{"PeerTimeout", func(c *Config) { c.PeerTimeout = time.Millisecond }},
		{"JoinTimeout", func(c *Config) { c.JoinTimeout = -time.Second }},
		{"Join", func(c *Config) { c.Join = []string{"127.0.0.1"} }},
		{"Join", func(c *Config) { c.Join = []string{"127.0.0.1:0"} }},
		{"MetricsAddr", func(c *Config) { c.MetricsAddr = "nope" }},
	} {
		c := good
		tc.mod(&c)
		c.Logger = nil
		w, err := Start(context.Background(), c)
		if err == nil {
			w.Close()
			t.Errorf("%s: Start accepted %+v", tc.field, c)
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %q does not wrap ErrConfig and name the field", tc.field, err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(EnvRank, "2")
	t.Setenv(EnvWorldSize, "4")
	t.Setenv(EnvLocalRank, "0")
	t.Setenv(EnvJoin, " 127.0.0.1:7000, 127.0.0.1:7001 ")
	t.Setenv(EnvSecret, "00ff10")
	t.Setenv(EnvBindAddr, "127.0.0.2")
	t.Setenv(EnvBindPort, "7002")
	t.Setenv(EnvMetricsAddr, "127.0.0.1:9100")
	t.Setenv(EnvPeerTimeout, "3s")
	t.Setenv(EnvJoinTimeout, "1m")
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Rank: 2, WorldSize: 4, Join: []string{"127.0.0.1:7000", "127.0.0.1:7001"}, Secret: []byte{0, 0xff, 0x10},
		BindAddr: "127.0.0.2", BindPort: 7002, MetricsAddr: "127.0.0.1:9100", PeerTimeout: 3 * time.Second, JoinTimeout: time.Minute}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	for _, bad := range []struct{ name, val string }{
		{EnvRank, "two"}, {EnvWorldSize, "4.0"}, {EnvBindPort, "x"}, {EnvSecret, "zz"},
		{EnvPeerTimeout, "10"}, {EnvJoinTimeout, "-1s"}, {EnvLocalRank, "a"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			t.Setenv(bad.name, bad.val)
			if _, err := ConfigFromEnv(); err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.name) {
				t.Fatalf("%s=%q: err = %v, want one naming the variable", bad.name, bad.val, err)
			}
		})
	}
	t.Setenv(EnvRank, "")
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), EnvRank) {
		t.Fatalf("missing %s: err = %v", EnvRank, err)
	}
}

func TestWorldOfOne(t *testing.T) {
	w, err := Start(context.Background(), Config{WorldSize: 1, MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if w.Rank() != 0 || w.Size() != 1 || w.Next() != nil || w.Prev() != nil || w.Err() != nil {
		t.Fatalf("rank %d size %d next %v prev %v err %v", w.Rank(), w.Size(), w.Next(), w.Prev(), w.Err())
	}
	resp, err := http.Get("http://" + w.MetricsAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// exchange makes every rank send rounds messages of each size to its
// successor and checks what each receives from its predecessor.
func exchange(t *testing.T, ws []*Worker, rounds int, sizes []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	size := len(ws)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for r, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := (r - 1 + size) % size
			for op := range uint64(rounds) {
				for _, n := range sizes {
					if err := w.Next().Send(ctx, testMsg(r, op, n)); err != nil {
						errs[r] = fmt.Errorf("send op %d: %w", op, err)
						return
					}
					m, err := w.Prev().Recv(ctx)
					if err != nil {
						errs[r] = fmt.Errorf("recv op %d: %w", op, err)
						return
					}
					if err := checkMsg(m, prev, op, n); err != nil {
						errs[r] = fmt.Errorf("op %d, %d bytes from rank %d: %w", op, n, prev, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

func TestRingOfFourInProcess(t *testing.T) {
	ws, _ := mustWorld(t, 4, func(r int, c *Config) {
		if r == 0 {
			c.MetricsAddr = "127.0.0.1:0"
		}
	})
	for r, w := range ws {
		if w.Rank() != r || w.Size() != 4 {
			t.Fatalf("worker %d: rank %d size %d", r, w.Rank(), w.Size())
		}
	}
	sizes := []int{0, 1, 4099, 1<<20 + 5} // the last spans two write chunks
	exchange(t, ws, 3, sizes)

	// The links also carry frames the other way round.
	ctx := context.Background()
	if err := ws[1].Prev().Send(ctx, testMsg(1, 9, 10)); err != nil {
		t.Fatal(err)
	}
	m, err := ws[0].Next().Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMsg(m, 1, 9, 10); err != nil {
		t.Fatal(err)
	}

	if got := ws[0].Metrics().LinkRecvFrames.Load(); got != int64(3*len(sizes)+1) {
		t.Errorf("rank 0 received %d frames, want %d", got, 3*len(sizes)+1)
	}
	ws[0].Metrics().Observe(ring.Stats{Values: 100, WireBytes: 20, RawBytes: 400}, nil)
	resp, err := http.Get("http://" + ws[0].MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`vccl_link_received_frames_total{rank="0"} 13`, `vccl_collective_bits_per_value{rank="0"} 1.6`, "# TYPE vccl_collectives_total counter"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	resp, err = http.Get("http://" + ws[0].MetricsAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}

	for _, w := range ws {
		if err := w.Close(); err != nil {
			t.Errorf("rank %d: Close: %v", w.Rank(), err)
		}
	}
	if _, err := ws[0].Prev().Recv(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close: %v, want ErrClosed", err)
	}
	if err := ws[0].Next().Send(ctx, testMsg(0, 0, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
}

func TestRingOfTwo(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	exchange(t, ws, 5, []int{7, 100000})
}

// TestFramesFlushedOnClose checks that frames Send accepted reach the peer
// even when the sender closes right away, and that the peer then sees the
// sender's link as lost.
func TestFramesFlushedOnClose(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	ctx := context.Background()
	const n = 20
	for op := range uint64(n) {
		if err := ws[0].Next().Send(ctx, testMsg(0, op, 50000)); err != nil {
			t.Fatal(err)
		}
	}
	// The receiver takes the frames while the sender closes: Close waits
	// (up to 4/5 of the peer timeout) for the peer to have read everything
	// before it closes the socket. Frames stay in the sockets until the
	// receiver asks for them: nothing is buffered in its process.
	got := make(chan error, 1)
	go func() {
		for op := range uint64(n) {
			m, err := ws[1].Prev().Recv(ctx)
			if err != nil {
				got <- fmt.Errorf("frame %d: %w", op, err)
				return
			}
			if err := checkMsg(m, 0, op, 50000); err != nil {
				got <- fmt.Errorf("frame %d: %w", op, err)
				return
			}
		}
		_, err := ws[1].Prev().Recv(ctx)
		var pl *ring.PeerLostError
		if !errors.As(err, &pl) || pl.Rank != 0 {
			got <- fmt.Errorf("Recv after the peer closed: %v, want rank 0 lost", err)
			return
		}
		got <- nil
	}()
	if err := ws[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestRecvHonoursContext(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := ws[0].Prev().Recv(ctx); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv: %v, want context.Canceled", err)
	}
}

// linkHeaders are valid credentials of rank from for a link to rank to.
func linkHeaders(k jobKeys, from, to int) http.Header {
	ts := time.Now().UnixNano()
	nonce := newNonce()
	h := http.Header{}
	h.Set(hdrJob, k.jobHex())
	h.Set(hdrFrom, itoa(from))
	h.Set(hdrTo, itoa(to))
	h.Set(hdrTime, fmt.Sprint(ts))
	h.Set(hdrNonce, nonce)
	h.Set(hdrAuth, fmt.Sprintf("%x", k.linkMAC("dial", from, to, ts, nonce, "")))
	return h
}

func TestLinkUpgradeRefusesStrangers(t *testing.T) {
	ws, logs := mustWorld(t, 3, nil)
	target := ws[1] // it accepts a link from its successor, rank 2
	url := "ws://" + target.linkAddr + linkPath
	wrong, err := deriveKeys([]byte("not the job secret"))
	if err != nil {
		t.Fatal(err)
	}
	right := target.keys
	replayed := linkHeaders(right, 2, 1)
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
	}{
		{"no secret", nil, http.StatusUnauthorized},
		{"wrong secret", linkHeaders(wrong, 2, 1), http.StatusForbidden},
		{"wrong secret, right job id", func() http.Header {
			h := linkHeaders(wrong, 2, 1)
			h.Set(hdrJob, right.jobHex())
			return h
		}(), http.StatusForbidden},
		{"tampered rank", func() http.Header { h := linkHeaders(right, 2, 1); h.Set(hdrFrom, "0"); return h }(), http.StatusForbidden},
		{"not the successor", linkHeaders(right, 0, 1), http.StatusForbidden},
		{"successor already linked", replayed, http.StatusConflict},
		{"replayed request", replayed, http.StatusForbidden},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(url, tc.header)
		if err == nil {
			ws.Close()
			t.Errorf("%s: upgrade accepted", tc.name)
			continue
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Errorf("%s: got %v (%v), want status %d", tc.name, resp, err, tc.status)
		}
	}
	if n := target.Metrics().LinksRefused.Load(); n != 7 {
		t.Errorf("LinksRefused = %d, want 7", n)
	}
	if c := strings.Count(logs.String(), "refused link request"); c != 7 {
		t.Errorf("%d refusals logged, want 7:\n%s", c, logs)
	}
	// The job is unaffected.
	exchange(t, ws, 2, []int{1000})
}

func TestMemberlistRefusesWrongKey(t *testing.T) {
	ws, logs := mustWorld(t, 2, nil)
	seed := ws[0].MemberAddr()
	wrong, err := deriveKeys([]byte("not the job secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"wrong key", wrong.gossip}, {"no key", nil}} {
		c := memberlist.DefaultLocalConfig()
		c.Name = "intruder-" + strings.ReplaceAll(tc.name, " ", "-")
		c.BindAddr, c.BindPort = "127.0.0.1", 0
		c.SecretKey = tc.key
		c.LogOutput = io.Discard
		c.Delegate = &fakeMeta{meta: fmt.Appendf(nil, `{"v":1,"job":%q,"rank":1,"world":2,"link":"127.0.0.1:1"}`, ws[0].keys.jobHex())}
		ml, err := memberlist.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		n, err := ml.Join([]string{seed})
		if err == nil || n != 0 {
			t.Errorf("%s: joined %d nodes, err %v", tc.name, n, err)
		}
		if got := len(ml.Members()); got != 1 {
			t.Errorf("%s: intruder sees %d members", tc.name, got)
		}
		ml.Shutdown()
	}
	for _, w := range ws {
		if got := w.ml.NumMembers(); got != 2 {
			t.Errorf("rank %d sees %d members, want 2", w.Rank(), got)
		}
	}
	if !strings.Contains(logs.String(), "memberlist") {
		t.Errorf("refused joins were not logged:\n%s", logs)
	}
	exchange(t, ws, 1, []int{10})
}

// fakeMeta is a memberlist.Delegate with fixed meta.
type fakeMeta struct{ meta []byte }

func (f *fakeMeta) NodeMeta(int) []byte                 { return f.meta }
func (f *fakeMeta) NotifyMsg([]byte)                    {}
func (f *fakeMeta) GetBroadcasts(int, int) [][]byte     { return nil }
func (f *fakeMeta) LocalState(bool) []byte              { return nil }
func (f *fakeMeta) MergeRemoteState(buf []byte, _ bool) {}

func TestWrongSecretCannotJoin(t *testing.T) {
	_, errs, _ := startWorld(t, 2, func(r int, c *Config) {
		c.JoinTimeout = 2 * time.Second
		if r == 1 {
			c.Secret = []byte("another secret")
		}
	})
	for r, err := range errs {
		if err == nil {
			t.Fatalf("rank %d started with a mismatched secret", r)
		}
	}
	if !strings.Contains(errs[1].Error(), "could not join") || !strings.Contains(errs[0].Error(), "missing rank(s) 1") {
		t.Fatalf("errors do not explain: rank 0: %v; rank 1: %v", errs[0], errs[1])
	}
	noWorkerGoroutines(t) // a failed Start cleans up after itself
}

// everyErrorSays fails the test unless every process's error contains want.
func everyErrorSays(t *testing.T, errs []error, want string) {
	t.Helper()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("process %d: %v, want an error saying %q", r, err, want)
		}
	}
}

func TestWorldValidation(t *testing.T) {
	t.Run("duplicate rank", func(t *testing.T) {
		_, errs, _ := startWorld(t, 3, func(r int, c *Config) {
			c.JoinTimeout = 5 * time.Second
			if r == 2 {
				c.Rank = 1
			}
		})
		everyErrorSays(t, errs, "duplicate rank 1")
	})
	t.Run("world size", func(t *testing.T) {
		_, errs, _ := startWorld(t, 2, func(r int, c *Config) {
			c.JoinTimeout = 5 * time.Second
			if r == 1 {
				c.WorldSize = 3
			}
		})
		everyErrorSays(t, errs, "world size")
		if errs[0] != nil && !strings.Contains(errs[0].Error(), "rank 1") {
			t.Errorf("rank 0's error does not name rank 1: %v", errs[0])
		}
	})
	t.Run("missing rank", func(t *testing.T) {
		// A world of 3 where rank 1 never comes.
		logs := &testenv.SyncBuffer{}
		port := testenv.FreePort(t, "127.0.0.1")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for _, r := range []int{0, 2} {
			c := testConfig(r, 3, port, logs)
			c.JoinTimeout = time.Duration(1+r) * 1000 * time.Millisecond // rank 2 outlives rank 0
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := Start(context.Background(), c)
				if w != nil {
					w.Close()
				}
				errs[r] = err
			}()
		}
		wg.Wait()
		if errs[0] == nil || !strings.Contains(errs[0].Error(), "2 of 3 ranks present after 1s, missing rank(s) 1") {
			t.Errorf("rank 0: %v, want missing rank 1", errs[0])
		}
		// Rank 0 has given up by the time rank 2 does.
		if errs[2] == nil || !strings.Contains(errs[2].Error(), "missing rank(s)") || !strings.Contains(errs[2].Error(), "1") {
			t.Errorf("rank 2: %v, want missing ranks including 1", errs[2])
		}
	})
}

// TestStartHonoursContext: a cancelled Start returns promptly.
func TestStartHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		w, err := Start(ctx, testConfig(0, 2, testenv.FreePort(t, "127.0.0.1"), &testenv.SyncBuffer{}))
		if w != nil {
			w.Close()
		}
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
}

// crash makes w vanish the way a killed process does: no memberlist leave,
// no websocket close frame.
func crash(w *Worker) {
	w.mu.Lock()
	w.closing = true // silence its own failure reports
	ml := w.ml
	w.ml = nil
	w.mu.Unlock()
	ml.Shutdown()
	w.next.ws.NetConn().Close()
	w.prev.ws.NetConn().Close()
}

// waitLost runs a Recv on every worker but skip and checks that each fails
// naming rank lost within bound.
func waitLost(t *testing.T, ws []*Worker, skip, lost int, start time.Time, bound time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	for r, w := range ws {
		if r == skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*bound)
			defer cancel()
			_, err := w.Prev().Recv(ctx)
			el := time.Since(start)
			var pl *ring.PeerLostError
			if !errors.Is(err, ring.ErrPeerLost) || !errors.As(err, &pl) || pl.Rank != lost {
				t.Errorf("rank %d: Recv: %v, want rank %d lost", r, err, lost)
				return
			}
			if el > bound {
				t.Errorf("rank %d noticed the loss after %v, bound %v", r, el, bound)
			}
			if err := w.Next().Send(context.Background(), testMsg(r, 0, 1)); !errors.As(err, &pl) || pl.Rank != lost {
				t.Errorf("rank %d: Send after the loss: %v, want rank %d lost", r, err, lost)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("rank %d lost", lost)) {
				t.Errorf("rank %d: error text %q does not name rank %d", r, err, lost)
			}
		}()
	}
	wg.Wait()
}

func TestCrashedPeerInProcess(t *testing.T) {
	ws, _ := mustWorld(t, 4, func(r int, c *Config) {
		if r == 0 {
			c.MetricsAddr = "127.0.0.1:0"
		}
	})
	exchange(t, ws, 1, []int{100})
	start := time.Now()
	crash(ws[2])
	waitLost(t, ws, 2, 2, start, testPeerTimeout)
	for r, w := range ws {
		if r != 2 && w.Err() == nil {
			t.Errorf("rank %d: Err() is nil after the loss", r)
		}
	}
	resp, err := http.Get("http://" + ws[0].MetricsAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "rank 2 lost") {
		t.Errorf("/healthz after the loss: %s %q", resp.Status, body)
	}
}

// stallProxy forwards TCP connections until stall is called; then it stops
// moving bytes but keeps every socket open, like a cut cable.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	once    sync.Once
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newStallProxy(target string) (*stallProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &stallProxy{ln: ln, target: target, stalled: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *stallProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, d)
		go p.pipe(d, c)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-p.stalled: // the bytes vanish, the sockets stay open
			default:
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

func (p *stallProxy) close() {
	p.stall()
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestStalledLink cuts the link from rank 1 to rank 2 without closing any
// socket: the read deadlines must notice, and every rank must fail naming
// one of the two ends within the bound.
func TestStalledLink(t *testing.T) {
	var mu sync.Mutex
	var proxy *stallProxy
	var proxyErr error
	dialHook = func(from, to int, addr string) string {
		if from != 2 { // rank 2 dials rank 1 for the link from 1 to 2
			return addr
		}
		mu.Lock()
		defer mu.Unlock()
		proxy, proxyErr = newStallProxy(addr)
		if proxyErr != nil {
			return addr
		}
		return proxy.ln.Addr().String()
	}
	t.Cleanup(func() { dialHook = nil })
	ws, _ := mustWorld(t, 4, nil)
	mu.Lock()
	p := proxy
	mu.Unlock()
	if p == nil {
		t.Fatalf("no proxy: %v", proxyErr)
	}
	t.Cleanup(p.close)
	exchange(t, ws, 2, []int{1000})

	start := time.Now()
	p.stall()
	var wg sync.WaitGroup
	for r, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*testPeerTimeout)
			defer cancel()
			_, err := w.Prev().Recv(ctx)
			el := time.Since(start)
			var pl *ring.PeerLostError
			if !errors.As(err, &pl) || (pl.Rank != 1 && pl.Rank != 2) {
				t.Errorf("rank %d: Recv: %v, want rank 1 or 2 lost", r, err)
				return
			}
			if el > testPeerTimeout {
				t.Errorf("rank %d noticed the stall after %v, bound %v", r, el, testPeerTimeout)
			}
			t.Logf("rank %d: %v after %v", r, err, el.Round(time.Millisecond))
		}()
	}
	wg.Wait()
}

// sendForged sends a forged frame on l: mutate rewrites the sealed frame
// before it is written as one websocket message.
func sendForged(t *testing.T, l *link, m ring.Message, mutate func([]byte) []byte) {
	t.Helper()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	f := mutate(appendFrame(nil, l.w.keys.job, m, l.seq))
	if err := l.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
		t.Fatalf("forged frame not sent: %v", err)
	}
	l.seq++
}

func TestBadFramesRejected(t *testing.T) {
	other, err := deriveKeys([]byte("another job"))
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		want   string
	}{
		{"corrupted payload", func(f []byte) []byte { f[len(f)-1] ^= 1; return f }, "corrupted"},
		{"corrupted header", func(f []byte) []byte { f[40] ^= 0x80; return f }, "corrupted"},
		{"truncated payload", func(f []byte) []byte { return f[:len(f)-10] }, "truncated"},
		{"truncated header", func(f []byte) []byte { return f[:20] }, "truncated"},
		{"trailing bytes", func(f []byte) []byte { return append(f, 1, 2, 3) }, "after the"},
		{"other job", func(f []byte) []byte {
			copy(f[8:16], other.job[:])
			sealFrame(f, binaryLE64(f[16:]))
			return f
		}, "job"},
		{"replayed", func(f []byte) []byte { return first }, "sequence 0, expected 1"},
		{"wrong version", func(f []byte) []byte { f[4] = 9; return f }, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, logs := mustWorld(t, 2, nil)
			ctx := context.Background()
			good := testMsg(0, 0, 5000)
			var firstMu sync.Mutex
			sendForged(t, ws[0].next, good, func(f []byte) []byte {
				firstMu.Lock()
				first = append([]byte(nil), f...)
				firstMu.Unlock()
				return f
			})
			m, err := ws[1].Prev().Recv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkMsg(m, 0, 0, 5000); err != nil {
				t.Fatal(err)
			}
			firstMu.Lock()
			sendForged(t, ws[0].next, testMsg(0, 1, 5000), tc.mutate)
			firstMu.Unlock()
			// A good frame after the bad one must not be delivered either.
			if err := ws[0].Next().Send(ctx, testMsg(0, 2, 10)); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				_, err = ws[1].Prev().Recv(ctx)
				if !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rank 0") {
					t.Fatalf("Recv %d: %v, want a bad frame error naming rank 0 and %q", i, err, tc.want)
				}
			}
			if !strings.Contains(logs.String(), "rejected a frame from rank 0") {
				t.Errorf("rejection not logged:\n%s", logs)
			}
		})
	}
}

func binaryLE64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// TestCloseWakesPendingAndLeavesNoGoroutines: Close ends a pending Recv
// with ErrClosed and returns only after every goroutine of the worker has
// exited.
func TestCloseWakesPendingAndLeavesNoGoroutines(t *testing.T) {
	ws, _ := mustWorld(t, 3, nil)
	exchange(t, ws, 1, []int{10})
	done := make(chan error)
	go func() { _, err := ws[0].Prev().Recv(context.Background()); done <- err }()
	closeAll(ws)
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Recv: %v, want ErrClosed", err)
	}
	noWorkerGoroutines(t)
}

// noWorkerGoroutines fails the test if a goroutine of a Worker or a link
// is still running.
func noWorkerGoroutines(t *testing.T) {
	t.Helper()
	buf := make([]byte, 4<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "vccl/worker.(*link)") || strings.Contains(g, "vccl/worker.(*Worker)") {
			t.Errorf("goroutine left after Close:\n%s", g)
		}
	}
}

// BenchmarkLink measures one link's throughput between two in-process
// workers on loopback; the receiver recycles payloads as the ring does, so
// allocs/op is what a message costs in steady state.
func BenchmarkLink(b *testing.B) {
	for _, size := range []int{64 << 10, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			ws, _ := mustWorld(b, 2, nil)
			ctx := context.Background()
			m := testMsg(0, 0, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			errc := make(chan error, 1)
			b.ReportAllocs()
			go func() {
				for range b.N {
					m, err := ws[1].Prev().Recv(ctx)
					if err != nil {
						errc <- err
						return
					}
					ws[1].prev.Recycle(m.Payload)
				}
				errc <- nil
			}()
			for range b.N {
				if err := ws[0].Next().Send(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestBackpressure: a receiver that does not call Recv for longer than the
// peer timeout slows its sender down (Send blocks: nothing is buffered on
// the receiving side beyond the sockets) but neither side takes the other
// for dead; once Recv is called, every frame arrives intact and in order.
func TestBackpressure(t *testing.T) {
	t.Run("socket", func(t *testing.T) { testBackpressure(t, -1, 8) })
	// A same-host link holds what its shared-memory ring holds (32 MiB)
	// beyond the sockets, and not more.
	t.Run("shared memory", func(t *testing.T) { testBackpressure(t, 0, 16) })
}

// testBackpressure is TestBackpressure with a link's SharedMemBytes shm,
// sending n payloads of 4 MiB.
func testBackpressure(t *testing.T, shm, n int) {
	ws, _ := mustWorld(t, 2, func(_ int, c *Config) { c.PeerTimeout = 2 * time.Second; c.SharedMemBytes = shm })
	ctx := context.Background()
	const size = 4 << 20 // 8 of them, 32 MiB: more than loopback sockets hold
	if shm >= 0 && ws[0].next.tx == nil {
		t.Fatal("the link between two ranks of this host has no shared memory")
	}
	sent := make(chan error, 1)
	var sentAt time.Time
	msgs := make([]ring.Message, n)
	for i := range msgs {
		msgs[i] = testMsg(0, uint64(i), size)
	}
	go func() {
		for _, m := range msgs {
			if err := ws[0].Next().Send(ctx, m); err != nil {
				sent <- err
				return
			}
		}
		sentAt = time.Now()
		sent <- nil
	}()
	away := 3 * time.Second // 1.5 PeerTimeout
	// Live heap after a GC: what the links hold (memberlist's garbage
	// does not count).
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := int64(ms.HeapAlloc)
	time.Sleep(away)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if d := int64(ms.HeapAlloc) - heap0; d > 8<<20 {
		t.Errorf("live heap grew by %d bytes while the receiver was away: the link buffered", d)
	}
	select {
	case err := <-sent:
		t.Fatalf("all %d MiB were sent while the receiver was away (err %v): no backpressure", n*size>>20, err)
	default:
	}
	back := time.Now()
	for i := range n {
		m, err := ws[1].Prev().Recv(ctx)
		if err != nil {
			t.Fatalf("Recv %d after %v away: %v", i, away, err)
		}
		if err := checkMsg(m, 0, uint64(i), size); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("Send: %v", err)
	}
	if sentAt.Before(back) {
		t.Errorf("the sender finished before the receiver came back")
	}
	if shm >= 0 && ws[0].Metrics().LinkShmFrames.Load() == 0 {
		t.Errorf("no payload went through shared memory")
	}
}

// TestSendHonoursContext: a Send blocked on a peer that does not read
// returns soon after its context ends.
func TestSendHonoursContext(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	m := testMsg(0, 0, 8<<20)
	done := make(chan error, 1)
	go func() {
		for {
			if err := ws[0].Next().Send(ctx, m); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let the sockets fill up
	cancel()
	t0 := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", err)
		}
		t.Logf("Send returned %v after the cancel: %v", time.Since(t0).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("Send still blocked 5s after its context ended")
	}
}

// TestHostileLength: a frame whose header announces 512 MiB, where Recv
// expects at most 1 MiB, is refused from the header: nothing of that size
// is allocated and the error names the sender.
func TestHostileLength(t *testing.T) {
	ws, _ := mustWorld(t, 2, nil)
	ctx := context.Background()
	sendForged(t, ws[0].next, testMsg(0, 1, 1000), func(f []byte) []byte {
		binary.LittleEndian.PutUint32(f[56:], 512<<20)
		binary.LittleEndian.PutUint32(f[64:], crc32.Checksum(f[:64], castagnoli))
		return f
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	alloc0 := ms.TotalAlloc
	_, err := ws[1].prev.RecvLimit(ctx, 1<<20)
	runtime.ReadMemStats(&ms)
	if !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "exceeds the 1048576 bytes expected") || !strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("RecvLimit: %v, want a bad frame naming rank 0 that exceeds the bound", err)
	}
	if d := ms.TotalAlloc - alloc0; d > 16<<20 {
		t.Errorf("%d bytes allocated while refusing the frame", d)
	}
}
