// Package jobcmd holds what the examples that run as the ranks of a vccl job
// (allreduce_perf, mnist, lm) share: main's signal handling, the -codec,
// -backend and -bpv flags, the collective's configuration built from the
// launcher's environment and those flags, closing the communicator, the
// end-of-step Report and its Gather, and rank 0's progress bar.
package jobcmd

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/worker"
)

// Main runs run with the command line, stdout and stderr, and a context
// that ends on SIGINT or SIGTERM. When run fails it prints "name: error" on
// stderr and exits with status 1.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// CodecFlags are the -codec, -backend and -bpv flags. Only the flags given
// on the command line override the launcher's environment (see Config).
type CodecFlags struct {
	Codec, Backend string
	BPV            float64
	set            map[string]bool
}

// Register defines the flags on fs. codecWhat and backendWhat begin the
// usage texts of -codec and -backend ("codec", "video backend").
func (c *CodecFlags) Register(fs *flag.FlagSet, codecWhat, backendWhat string) {
	fs.StringVar(&c.Codec, "codec", collective.DefaultCodec, codecWhat+": one of "+strings.Join(gradcodec.Codecs(), ", ")+" (unset: $"+worker.EnvCodec+" under the launcher, else "+collective.DefaultCodec+")")
	fs.StringVar(&c.Backend, "backend", collective.DefaultBackend, backendWhat+": auto, nvenc or software (unset: $"+worker.EnvBackend+" under the launcher, else auto)")
	fs.Float64Var(&c.BPV, "bpv", collective.DefaultBitsPerValue, "target bits per value of the video codecs (unset: $"+worker.EnvBPV+" under the launcher, else 1.4)")
}

// Parse parses args with fs, notes which of c's flags were given, and
// rejects arguments left over after the flags.
func (c *CodecFlags) Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// Config builds the collective's configuration: the job's environment
// (the launcher's, or a Slurm step's or a Kubernetes Indexed Job's) when
// there is one (a single rank otherwise), with the flags given on the
// command line on top.
func (c *CodecFlags) Config() (collective.Config, error) {
	cfg := collective.DefaultConfig()
	if collective.InJob() {
		var err error
		if cfg, err = collective.ConfigFromEnv(); err != nil {
			return cfg, err
		}
	}
	if c.set["codec"] {
		cfg.Codec = strings.ToLower(c.Codec)
	}
	if c.set["backend"] {
		cfg.Backend = strings.ToLower(c.Backend)
	}
	if c.set["bpv"] {
		cfg.BitsPerValue = c.BPV
	}
	return cfg, nil
}

// Setup parses the command line with parseFlags and builds the
// collective's configuration from the job's environment and the flags
// (CodecFlags.Config).
func Setup[O interface {
	Config() (collective.Config, error)
}](args []string, stderr io.Writer, parseFlags func([]string, io.Writer) (O, error)) (O, collective.Config, error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return o, collective.Config{}, err
	}
	cfg, err := o.Config()
	return o, cfg, err
}

// Close closes comm, to be deferred by a run function with its named error
// result err. The results are in (and checked) by the time Close runs, so a
// failure to leave the job cleanly is worth a warning on stderr, not a
// failed run; where *err is already set, Close's error is dropped.
func Close(comm *collective.Comm, stderr io.Writer, err *error) {
	if cerr := comm.Close(); cerr != nil && *err == nil {
		fmt.Fprintf(stderr, "warning: %v\n", cerr)
	}
}

// Report is what a rank contributes to the AllGather that ends a step of an
// example: a SHA-256 of its parameters or result, which must agree across
// ranks, and a fixed number of 64-bit counters.
type Report struct {
	Hash  [32]byte
	Words []uint64
}

// Marshal encodes r as the hash followed by the words, little-endian.
func (r Report) Marshal() []byte {
	b := make([]byte, 0, len(r.Hash)+8*len(r.Words))
	b = append(b, r.Hash[:]...)
	for _, w := range r.Words {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

// UnmarshalReport decodes a Report of exactly words counters.
func UnmarshalReport(b []byte, words int) (Report, error) {
	var r Report
	if want := len(r.Hash) + 8*words; len(b) != want {
		return r, fmt.Errorf("report of %d bytes, want %d", len(b), want)
	}
	copy(r.Hash[:], b)
	r.Words = make([]uint64, words)
	for i := range r.Words {
		r.Words[i] = binary.LittleEndian.Uint64(b[len(r.Hash)+8*i:])
	}
	return r, nil
}

// SumReports adds up every rank's counters in rank order: the words listed
// in floatWords as float64 bits (math.Float64bits), the others as integers.
// The sum's hash is the first report's (Gather has checked they agree).
func SumReports(reps []Report, floatWords ...int) Report {
	var sum Report
	if len(reps) == 0 {
		return sum
	}
	sum.Hash = reps[0].Hash
	sum.Words = make([]uint64, len(reps[0].Words))
	isFloat := make([]bool, len(sum.Words))
	for _, i := range floatWords {
		isFloat[i] = true
	}
	for _, r := range reps {
		for i, w := range r.Words {
			if isFloat[i] {
				sum.Words[i] = math.Float64bits(math.Float64frombits(sum.Words[i]) + math.Float64frombits(w))
			} else {
				sum.Words[i] += w
			}
		}
	}
	return sum
}

// Gather runs the AllGather that ends a step: it sends mine and returns
// every rank's Report (with as many counters as mine), indexed by rank. It
// fails where a report is malformed, or where a rank's hash differs from
// this rank's (the replicas have drifted apart), naming those ranks; what
// labels the step in errors ("step 12", "epoch 3").
func Gather(ctx context.Context, comm *collective.Comm, what string, mine Report) ([]Report, error) {
	parts, err := comm.AllGather(ctx, mine.Marshal())
	if err != nil {
		return nil, fmt.Errorf("%s: gathering the parameter hashes: %w", what, err)
	}
	reps := make([]Report, len(parts))
	var differ []string
	for r, p := range parts {
		if reps[r], err = UnmarshalReport(p, len(mine.Words)); err != nil {
			return nil, fmt.Errorf("rank %d: %s: from rank %d: %v", comm.Rank(), what, r, err)
		}
		if reps[r].Hash != mine.Hash {
			differ = append(differ, strconv.Itoa(r))
		}
	}
	if len(differ) > 0 {
		return nil, fmt.Errorf("rank %d: %s: parameters differ from this rank's (sha256 %x…) on rank(s) %s: the replicas have drifted apart",
			comm.Rank(), what, mine.Hash[:6], strings.Join(differ, ","))
	}
	return reps, nil
}
