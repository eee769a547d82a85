// Package testenv holds the helpers that vccl's tests share: a
// goroutine-safe log buffer, a loopback port free for memberlist, the
// TestMain of a test binary that re-executes itself as a child process, and
// running the ranks (or nodes) of a test job concurrently.
//
// It imports the standard library only, so that the tests of every package
// (worker, collective, launcher, the examples) can use it without an import
// cycle.
package testenv

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers, for logs and
// child-process output.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns a port free for both TCP and UDP on ip (memberlist uses
// both), or fails the test. It picks from below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range) where there is room: a port the
// kernel handed out for ":0" and that was closed again can be handed to
// the next outgoing connection of any process before the test binds it
// (seen in CI, with the packages' tests running in parallel), while a port
// below that range is only ever taken by an explicit bind.
func FreePort(tb testing.TB, ip string) int {
	tb.Helper()
	lo, hi := belowEphemeral()
	for range 200 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		if !claimPort(port) {
			continue // handed out before in this process
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			if port != 0 && errors.Is(err, syscall.EADDRINUSE) {
				continue // taken: try another
			}
			tb.Fatalf("listen on %s: %v", ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	tb.Fatalf("no port free for TCP and UDP on %s", ip)
	return 0
}

// handedOut holds the ports FreePort returned in this process: two calls
// before either port is bound must not get the same one.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// claimPort records port as handed out, reporting false if it was already;
// port 0 (the kernel picks) is always claimable.
func claimPort(port int) bool {
	if port == 0 {
		return true
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// belowEphemeral returns a port range [lo, hi) below the kernel's ephemeral
// ports, or lo == hi where there is none worth using (then FreePort asks
// the kernel for a port).
func belowEphemeral() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first < 12000 {
		return 0, 0
	}
	// Below 19000: the tests bind 19100 (launcher metrics) and Slurm's
	// derived rendezvous ports (20000 and up) themselves.
	return 10000, min(first, 19000)
}

// Tail returns the last n bytes of s, marked with a leading "…" where s was
// cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Main is the TestMain of a test binary that re-executes itself: where the
// environment variable env is set, the process is a child and exits with
// child's status for that mode; otherwise it runs the tests.
func Main(m *testing.M, env string, child func(mode string) int) {
	if mode := os.Getenv(env); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// Parallel runs f(0), ..., f(n-1) concurrently (the ranks or nodes of a
// test job) and returns their errors by index once all have returned.
func Parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errs
}
