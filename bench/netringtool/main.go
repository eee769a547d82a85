// Command netringtool is bench/netring.sh's helper. It has four
// subcommands:
//
//	netringtool sink  -listen ADDR [-count N]     accept N TCP connections and discard what they send
//	netringtool blast -to ADDR [-seconds S]       send to ADDR for S seconds and print the achieved Mbit/s
//	netringtool tag   -rate R -delay D -hosts N -codec C   read allreduce_perf output (launcher-prefixed
//	                                              or not) on stdin, write its per-size -json records with
//	                                              rate, delay, hosts and codec added
//	netringtool table [-codecs raw,fp16,h264,hevc]  read tagged records on stdin, print the netring table
//	netringtool compare [-codecs …]               read tagged records of several sweeps, print each
//	                                              setting's median, spread and ratio to gloo/nccl
//
// sink and blast measure what a shaped link really carries; tag and table
// build the benchmark's table.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vccl/vccl/bench/results"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netringtool sink|blast|tag|table|compare [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "sink":
		err = runSink(ctx, os.Args[2:])
	case "blast":
		err = runBlast(ctx, os.Args[2:], os.Stdout)
	case "tag":
		err = runTag(os.Args[2:], os.Stdin, os.Stdout)
	case "table":
		err = runTable(os.Args[2:], os.Stdin, os.Stdout)
	case "compare":
		err = runCompare(os.Args[2:], os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q (want sink, blast, tag, table or compare)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netringtool:", err)
		os.Exit(1)
	}
}

func runSink(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (host:port)")
	count := fs.Int("count", 1, "connections to serve before exiting")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("sink: -listen is required")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	stopped := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopped()
	defer ln.Close()
	for i := 0; i < *count; i++ {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("sink: accept %d of %d: %w", i+1, *count, err)
		}
		stopConn := context.AfterFunc(ctx, func() { c.Close() })
		_, err = io.Copy(io.Discard, c)
		stopConn()
		c.Close()
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("sink: %w", ctx.Err())
		}
	}
	return nil
}

func runBlast(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("blast", flag.ContinueOnError)
	to := fs.String("to", "", "sink address (host:port)")
	seconds := fs.Float64("seconds", 2, "how long to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("blast: -to is required")
	}
	d := time.Duration(*seconds * float64(time.Second))
	// The sink may start a moment later: retry the dial for a few seconds.
	var c net.Conn
	var err error
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var dl net.Dialer
		c, err = dl.DialContext(dialCtx, "tcp", *to)
		if err == nil {
			break
		}
		select {
		case <-dialCtx.Done():
			return fmt.Errorf("blast: dial %s: %w", *to, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer c.Close()
	buf := make([]byte, 256*1024)
	start := time.Now()
	deadline := start.Add(d)
	if err := c.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("blast: %w", err)
	}
	var sent int64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return fmt.Errorf("blast: write to %s: %w", *to, err)
		}
	}
	el := time.Since(start)
	// Bytes still queued in socket buffers are counted as sent; over 2 s this
	// overstates by at most a few hundred KiB.
	fmt.Fprintf(out, "%.1f Mbit/s (%d bytes in %.2fs)\n", float64(sent)*8/el.Seconds()/1e6, sent, el.Seconds())
	return nil
}

var prefix = regexp.MustCompile(`^\s*\[\d+\]\s*`)

func runTag(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("tag", flag.ContinueOnError)
	rate := fs.String("rate", "", "link rate (tc syntax)")
	delay := fs.String("delay", "0", "netem delay")
	hosts := fs.Int("hosts", 0, "ranks in the ring")
	codec := fs.String("codec", "", "codec, when the record lacks one")
	sweep := fs.Int("sweep", 0, "repetition of the benchmark this record belongs to (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	w := bufio.NewWriter(out)
	n, line := 0, 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(prefix.ReplaceAllString(sc.Text(), ""))
		if !strings.HasPrefix(s, "{") {
			continue
		}
		var obj map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return fmt.Errorf("tag: line %d: %w", line, err)
		}
		if _, ok := obj["size"]; !ok {
			if _, ok := obj["bytes"]; !ok {
				continue
			}
		}
		obj["rate"] = *rate
		obj["delay"] = *delay
		if *hosts > 0 {
			obj["hosts"] = *hosts
		}
		if *sweep > 0 {
			obj["sweep"] = *sweep
		}
		if _, ok := obj["codec"]; !ok && *codec != "" {
			obj["codec"] = *codec
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("tag: line %d: %w", line, err)
		}
		w.Write(b)
		w.WriteByte('\n')
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("tag: %w in %d lines of input", results.ErrNoRecords, line)
	}
	return w.Flush()
}

func runTable(args []string, in io.Reader, out io.Writer) error {
	return runReport("table", "gloo,gloo-pin,nccl,raw,fp16,bf16,int8,h264,hevc", "codec order in the table",
		args, in, out, results.Table, results.WriteTable)
}

func runCompare(args []string, in io.Reader, out io.Writer) error {
	return runReport("compare", "gloo-pin,raw,fp16,bf16,int8,h264,hevc", "codec order in the table (gloo and nccl come first)",
		args, in, out, results.Compare, results.WriteCompare)
}

// runReport is the table and compare commands: parse the -codecs flag
// (default codecs, described by usage), read the records on in, order them
// with build and print them on out with write.
func runReport[R any](name, codecs, usage string, args []string, in io.Reader, out io.Writer,
	build func([]results.Perf, []string) []R, write func(io.Writer, []R) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	order := fs.String("codecs", codecs, usage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	recs, err := results.ReadPerf(in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return write(out, build(recs, strings.Split(*order, ",")))
}
