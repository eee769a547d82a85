package main

import (
	"net"
	"testing"
)

func TestPortsBelow(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
	}{
		{"32768\t60999\n", 16896, 32768},
		{"1024 65535", 0, 0}, // no room below the range
		{"3000 4000", 0, 0},  // fewer than 1024 ports in the upper half
		{"", 0, 0},
		{"x 60999", 0, 0},
	} {
		if lo, hi := portsBelow(tc.in); lo != tc.lo || hi != tc.hi {
			t.Errorf("portsBelow(%q) = %d, %d, want %d, %d", tc.in, lo, hi, tc.lo, tc.hi)
		}
	}
}

// TestPickFreePortBelowEphemeral: the port for rank 0 is free for TCP and
// UDP, lies below the kernel's ephemeral range where this machine has one,
// and is never one of avoid.
func TestPickFreePortBelowEphemeral(t *testing.T) {
	lo, hi := belowEphemeral()
	for range 20 {
		p, err := pickFreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if hi > lo && (p < lo || p >= hi) {
			t.Fatalf("port %d outside [%d, %d), below the ephemeral range", p, lo, hi)
		}
		if err := checkPortFree("127.0.0.1", p); err != nil {
			t.Fatalf("picked port %d: %v", p, err)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	avoid := taken.Addr().(*net.TCPAddr).Port
	for range 20 {
		if p, err := pickFreePort("127.0.0.1", avoid); err != nil || p == avoid {
			t.Fatalf("pickFreePort avoiding %d: %d, %v", avoid, p, err)
		}
	}
}
