package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// run is the whole launcher: it parses args, runs the job and returns the
// exit code.
func run(args []string, stdout, stderr io.Writer) int {
	out := newOutput(stdout, stderr)
	o, err := parseArgs(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return reportErr(out, err)
	}
	path, err := o.resolveProgram()
	if err != nil {
		return reportErr(out, err)
	}
	secret, err := o.jobSecret()
	if err != nil {
		return reportErr(out, err)
	}
	// Catch the signals before anything starts, so that none is lost.
	// A signal the launcher was started with ignored (nohup, a
	// background job) stays ignored.
	sigs := make(chan os.Signal, 4)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		if !signal.Ignored(sig) {
			signal.Notify(sigs, sig)
		}
	}
	defer signal.Stop(sigs)
	// Without a handler, a write to a closed stdout (launcher … | head)
	// kills the launcher by SIGPIPE and leaves the ranks' children
	// running; with one, the write fails, the line is dropped and the job
	// goes on. Caught (not ignored) signals are reset by exec, so the
	// ranks keep the default SIGPIPE.
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE)
	defer signal.Stop(pipes)

	if o.nnodes > 1 {
		return runMulti(o, out, sigs, path, secret)
	}
	return runSingle(o, out, sigs, path, secret)
}

// runSingle runs a job on this node only.
func runSingle(o *options, out *output, sigs <-chan os.Signal, path string, secret []byte) int {
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1"
	}
	port := o.port
	if port == 0 {
		p, err := pickFreePort(addr)
		if err != nil {
			return reportErr(out, usagef("no free port on %s for rank 0: %v", addr, err))
		}
		port = p
	} else if err := checkPortFree(addr, port); err != nil {
		return reportErr(out, usagef("--port %d: %v", port, err))
	}
	s := &supervisor{
		opts: o, out: out, path: path, sigs: sigs,
		layout: jobLayout{
			nnodes: 1, nproc: o.nproc,
			join:     net.JoinHostPort(addr, strconv.Itoa(port)),
			bindAddr: addr, rank0Port: port,
			secretHex: o.workerSecretHex(secret),
		},
	}
	return s.run()
}

// reportErr prints err and returns the exit code it calls for.
func reportErr(out *output, err error) int {
	var ue *usageError
	var re *rdzvError
	switch {
	case errors.As(err, &ue):
		out.logf("%s", ue.msg)
		return exitUsage
	case errors.As(err, &re):
		out.logf("%s", re.msg)
		return re.code
	default:
		out.logf("%v", err)
		return 1
	}
}

// checkPortFree reports an error when addr:port cannot be bound for both
// TCP and UDP (memberlist uses both on one port).
func checkPortFree(addr string, port int) error {
	hp := net.JoinHostPort(addr, strconv.Itoa(port))
	l, err := net.Listen("tcp", hp)
	if err != nil {
		return fmt.Errorf("%s is in use or cannot be bound: %w", hp, err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", hp)
	if err != nil {
		return fmt.Errorf("%s (udp) is in use or cannot be bound: %w", hp, err)
	}
	u.Close()
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on Linux; a fixed name only risks a
		// memberlist name clash, which the rendezvous reports.
		return "0000"
	}
	return hex.EncodeToString(b)
}
