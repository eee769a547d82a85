package collective

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vccl/vccl/internal/metric"
)

// linkPath is where worker's link listener upgrades websockets (the worker
// does not export it).
const linkPath = "/vccl/link"

// ownListeners returns the TCP ports on 127.0.0.1 that this process listens
// on, read from /proc (the worker does not export its link address).
func ownListeners(t *testing.T) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		t.Skipf("no /proc/self/net/tcp: %v", err)
	}
	ports := map[int]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
			continue
		}
		addr := strings.Split(f[1], ":")
		if addr[0] != "0100007F" {
			continue
		}
		p, err := strconv.ParseInt(addr[1], 16, 32)
		if err == nil {
			ports[int(p)] = true
		}
	}
	return ports
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestWrongSecretRefused: a stranger who dials a rank's link without the
// secret, or with a wrong one, is refused, and so is one who tries to join
// the membership with a wrong secret; the job's results are unaffected.
func TestWrongSecretRefused(t *testing.T) {
	ctx := context.Background()
	const size = 4
	before := ownListeners(t)
	comms := loopbackWorld(t, size, func(c *Config) { c.Codec = "raw" })
	member := map[int]bool{}
	for _, c := range comms {
		_, p, err := net.SplitHostPort(c.worker.MemberAddr())
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		member[port] = true
	}
	var links []int
	for p := range ownListeners(t) {
		if !before[p] && !member[p] {
			links = append(links, p)
		}
	}
	if len(links) != size {
		t.Fatalf("found %d link listeners %v, want %d", len(links), links, size)
	}

	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for _, port := range links {
		url := fmt.Sprintf("ws://127.0.0.1:%d%s", port, linkPath)
		// No credentials at all.
		dialRefused(t, &d, url, nil, http.StatusUnauthorized, "port %d: no credentials", port)
		// Credentials made with a wrong secret, claiming every rank.
		for from := 0; from < size; from++ {
			h := http.Header{}
			h.Set("X-Vccl-Job", randHex(8))
			h.Set("X-Vccl-From", strconv.Itoa(from))
			h.Set("X-Vccl-To", strconv.Itoa((from+1)%size))
			h.Set("X-Vccl-Time", strconv.FormatInt(time.Now().UnixNano(), 10))
			h.Set("X-Vccl-Nonce", randHex(16))
			h.Set("X-Vccl-Auth", randHex(32))
			dialRefused(t, &d, url, h, http.StatusForbidden, "port %d: wrong secret", port)
		}
	}
	refused := int64(0)
	for _, c := range comms {
		refused += c.Metrics().LinksRefused.Load()
	}
	if want := int64(len(links) * (1 + size)); refused != want {
		t.Fatalf("workers counted %d refused links, want %d", refused, want)
	}

	// A stranger with a wrong secret cannot join the membership.
	cfg := DefaultConfig()
	cfg.Rank, cfg.WorldSize, cfg.Secret = 1, size, []byte("not-the-secret")
	cfg.Join = []string{comms[0].worker.MemberAddr()}
	cfg.JoinTimeout = 2 * time.Second
	if c, err := Init(ctx, cfg); err == nil {
		c.Close()
		t.Fatal("a rank with a wrong secret joined the job")
	} else {
		t.Logf("stranger refused: %v", err)
	}

	// The job goes on, exact.
	outs := make([][]float32, size)
	noErrors(t, each(comms, func(r int, c *Comm) error {
		x := rankData(77, r, 5000)
		_, err := c.AllReduce(ctx, x)
		outs[r] = x
		return err
	}))
	want := exactSum(77, size, 5000, false)
	for r := range outs {
		if e := metric.NMSE(outs[r], want); e > 1e-12 {
			t.Fatalf("rank %d: NMSE %g after the intrusion attempts", r, e)
		}
	}
	for _, c := range comms {
		if err := c.Err(); err != nil {
			t.Fatal(errors.Join(err))
		}
	}
}

// dialRefused dials a link at url with header h and fails the test unless
// the handshake is refused with HTTP status want; what (a format with args)
// names the attempt in the failure.
func dialRefused(t *testing.T, d *websocket.Dialer, url string, h http.Header, want int, what string, args ...any) {
	t.Helper()
	ws, resp, err := d.Dial(url, h)
	if err == nil {
		ws.Close()
		t.Fatalf("%s: the link was accepted", fmt.Sprintf(what, args...))
	}
	if resp == nil || resp.StatusCode != want {
		t.Fatalf("%s: got %v, %v; want %d", fmt.Sprintf(what, args...), resp, err, want)
	}
}
