package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// localPortRange is where Linux takes the ports of sockets that do not bind
// one (outgoing connections, listeners on port 0).
const localPortRange = "/proc/sys/net/ipv4/ip_local_port_range"

// pickFreePort returns a port on addr that is free for TCP and UDP now.
// Another process may take it before rank 0 binds it; rank 0 then fails
// with a bind error that names the port.
//
// On Linux the port lies below the kernel's ephemeral range, so no
// outgoing connection can take it. Inside that range it could: the other
// ranks dial rank 0 while it starts, and a dial whose source port the
// kernel picks equal to the port connects to itself (TCP simultaneous
// open) and holds the port, so rank 0's bind fails ("address already in
// use") and the job ends after the join timeout. Elsewhere, or when the
// range leaves no room below it, the kernel picks the port.
// Ports in avoid are not returned.
func pickFreePort(addr string, avoid ...int) (int, error) {
	lo, hi := belowEphemeral()
	var lastErr error
	for i := 0; i < 50; i++ {
		want := 0
		if hi > lo {
			want = lo + rand.IntN(hi-lo)
		}
		if slices.Contains(avoid, want) {
			lastErr = fmt.Errorf("port %d is reserved", want)
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(want)))
		if err != nil {
			if want == 0 {
				return 0, err
			}
			lastErr = err
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		if slices.Contains(avoid, port) {
			l.Close()
			lastErr = fmt.Errorf("port %d is reserved", port)
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(addr, strconv.Itoa(port)))
		l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no port free for both tcp and udp: %w", lastErr)
}

// belowEphemeral returns [lo, hi): the upper half of the ports between
// 1024 and the kernel's ephemeral range, or an empty range where that
// range cannot be read or leaves fewer than 1024 ports below it.
func belowEphemeral() (lo, hi int) {
	b, err := os.ReadFile(localPortRange)
	if err != nil {
		return 0, 0
	}
	return portsBelow(string(b))
}

// portsBelow parses ip_local_port_range's "LOW HIGH" and returns the
// upper half of [1024, LOW), or 0, 0 when that has fewer than 1024 ports.
func portsBelow(rangeText string) (lo, hi int) {
	f := strings.Fields(rangeText)
	if len(f) != 2 {
		return 0, 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low-1024 < 2048 || low > 65535 {
		return 0, 0
	}
	return (1024 + low) / 2, low
}
