// Command allreduce_perf is vccl's counterpart of nccl-tests' all_reduce_perf:
// it times AllReduce over a range of sizes and prints nccl-tests' table, plus
// vccl's own columns (codec, achieved bits per value, wire bytes, NMSE
// against the exact sum).
//
// Run it under the launcher:
//
//	go build -o allreduce_perf ./examples/allreduce_perf
//	go run ./launcher -np 4 -- ./allreduce_perf -b 1K -e 64M -f 2 -c 1 -codec hevc
//
// Flags follow nccl-tests where they apply: -b/-e minimum and maximum size in
// bytes (suffixes K, M, G are powers of 1024), -f the factor between sizes,
// -w warm-up iterations, -n timed iterations, -c 1 to check the results, -o
// sum|avg, -d float. vccl adds -codec, -bpv, -backend, -json and -cpuprofile
// (each rank writes its CPU profile to PATH.<rank>).
//
// Every rank's input is generated from (seed, rank), so every rank can
// compute the exact float64 sum of all inputs; NMSE is the checked result's
// squared error against it divided by its energy. #wrong is the number of
// ranks whose result differs from rank 0's bit for bit (ranks compare
// SHA-256 hashes through AllGather); vccl promises 0, whatever the codec.
// time is the mean wall time of one AllReduce, the slowest rank's; algbw is
// size/time and busbw = algbw·2(n−1)/n, as in nccl-tests. bpv and wire are
// the bits per value and payload bytes summed over all ranks' sends. The
// timed iterations run without error feedback and without warm-up, so each
// is the same compressed operation; the check runs one more AllReduce after
// them.
//
// With -json, rank 0 prints one JSON object per size (see result) instead
// of the table; it includes alloc_bytes, the Go heap allocated per timed
// AllReduce on the rank that allocated most, and the 10th, 50th and 90th
// percentiles and the maximum of the timed iterations' times, each the
// slowest rank's: whether a slow mean comes from a few stalls or from every
// iteration being slower.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/examples/internal/f32hash"
	"github.com/vccl/vccl/examples/internal/jobcmd"
	"github.com/vccl/vccl/internal/metric"
)

func main() { jobcmd.Main("allreduce_perf", run) }

// errWrong is returned when a check found ranks that disagree.
var errWrong = errors.New("results differ between ranks")

// options are the command's flags.
type options struct {
	minBytes, maxBytes int64
	cpuProfile         string // -cpuprofile: write rank r's CPU profile to <path>.<r>
	factor             int
	warmup, iters      int
	check              int
	op                 string
	dtype              string
	json               bool
	seed               uint64
	jobcmd.CodecFlags
}

// parseSize reads a byte count with an optional K, M or G suffix (powers of
// 1024; a trailing "B" or "iB" is accepted).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: want a byte count such as 1024, 1K, 64M or 1G", s)
	}
	return v * mult, nil
}

type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}
func (f sizeFlag) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.v = v
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{minBytes: 32 << 20, maxBytes: 32 << 20}
	fs := flag.NewFlagSet("allreduce_perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(sizeFlag{&o.minBytes}, "b", "minimum size in bytes (K, M, G suffixes) (default 32M)")
	fs.Var(sizeFlag{&o.maxBytes}, "e", "maximum size in bytes (K, M, G suffixes) (default 32M)")
	fs.IntVar(&o.factor, "f", 2, "multiplication factor between sizes")
	fs.IntVar(&o.warmup, "w", 5, "warm-up iterations per size")
	fs.IntVar(&o.iters, "n", 20, "timed iterations per size")
	fs.IntVar(&o.check, "c", 1, "check results (NMSE and #wrong): 1 on, 0 off")
	fs.StringVar(&o.op, "o", "sum", "reduction: sum or avg")
	fs.StringVar(&o.dtype, "d", "float", "data type: float (float32; the only one vccl reduces)")
	o.Register(fs, "codec", "video backend")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per size instead of the table")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the generated inputs")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write each rank's CPU profile of the timed sizes to `path`.<rank> (go tool pprof)")
	if err := o.Parse(fs, args); err != nil {
		return nil, err
	}
	switch {
	case o.minBytes < 4:
		return nil, fmt.Errorf("-b %d: want at least 4 bytes (one float)", o.minBytes)
	case o.maxBytes < o.minBytes:
		return nil, fmt.Errorf("-e %d is below -b %d", o.maxBytes, o.minBytes)
	case o.maxBytes > 4<<30:
		return nil, fmt.Errorf("-e %d: at most 4G", o.maxBytes)
	case o.factor < 2:
		return nil, fmt.Errorf("-f %d: want at least 2", o.factor)
	case o.warmup < 0:
		return nil, fmt.Errorf("-w %d: want >= 0", o.warmup)
	case o.iters < 1:
		return nil, fmt.Errorf("-n %d: want >= 1", o.iters)
	case o.check != 0 && o.check != 1:
		return nil, fmt.Errorf("-c %d: want 0 or 1", o.check)
	case o.op != "sum" && o.op != "avg":
		return nil, fmt.Errorf("-o %q: want sum or avg", o.op)
	case o.dtype != "float" && o.dtype != "float32":
		return nil, fmt.Errorf("-d %q: vccl reduces float (float32) only", o.dtype)
	}
	return o, nil
}

// sizes lists the byte sizes from min to max, multiplying by factor.
func sizes(min, max int64, factor int) []int64 {
	var out []int64
	for s := min; s <= max; s *= int64(factor) {
		out = append(out, s)
		if s > max/int64(factor) {
			break
		}
	}
	return out
}

// result is one row of the table; with -json it is printed as one object.
type result struct {
	Size      int64   `json:"size"`       // bytes
	Count     int     `json:"count"`      // float32 elements
	Type      string  `json:"type"`       // "float"
	Redop     string  `json:"redop"`      // "sum" or "avg"
	Root      int     `json:"root"`       // -1: no root
	TimeUs    float64 `json:"time_us"`    // mean time of one AllReduce, slowest rank
	AlgBW     float64 `json:"algbw"`      // GB/s: size / time
	BusBW     float64 `json:"busbw"`      // GB/s: algbw·2(n−1)/n
	Wrong     int     `json:"wrong"`      // ranks whose result differs from rank 0's; -1 unchecked
	Codec     string  `json:"codec"`      // codec that ran ("raw" where the policy sent it raw)
	BPV       float64 `json:"bpv"`        // achieved bits per value, all ranks
	WireBytes int64   `json:"wire_bytes"` // payload bytes per AllReduce, all ranks
	RawBytes  int64   `json:"raw_bytes"`  // what fp32 would have sent, all ranks
	NMSE      float64 `json:"nmse"`       // against the exact float64 result; -1 unchecked
	Ranks     int     `json:"ranks"`
	Iters     int     `json:"iters"`
	// AllocBytes is the heap allocated per timed AllReduce (Go's
	// runtime.MemStats.TotalAlloc over the timed iterations divided by
	// their number), the largest of any rank's.
	AllocBytes int64 `json:"alloc_bytes"`
	// Percentiles (nearest rank) and maximum of the timed iterations'
	// times, each the largest of any rank's.
	TimeP10Us float64 `json:"time_p10_us"`
	TimeP50Us float64 `json:"time_p50_us"`
	TimeP90Us float64 `json:"time_p90_us"`
	TimeMaxUs float64 `json:"time_max_us"`
}

// timePercentiles are the fractions timeQuantiles reports, then the maximum.
var timePercentiles = [...]float64{0.10, 0.50, 0.90, 1}

// timeQuantiles sorts ns in place and returns its nearest-rank percentiles
// at timePercentiles (the last one the maximum); zeros when ns is empty.
func timeQuantiles(ns []int64) (q [len(timePercentiles)]int64) {
	if len(ns) == 0 {
		return q
	}
	slices.Sort(ns)
	for i, f := range timePercentiles {
		k := int(math.Ceil(f*float64(len(ns)))) - 1
		q[i] = ns[min(max(k, 0), len(ns)-1)]
	}
	return q
}

// fill writes the first len(dst) values of rank's input stream.
func fill(dst []float32, seed uint64, rank int) {
	rng := rand.New(rand.NewPCG(seed, uint64(rank)+0x5eed))
	for i := range dst {
		dst[i] = float32(rng.NormFloat64())
	}
}

// exactResult computes the float64 sum (or mean) of every rank's input.
func exactResult(dst []float64, tmp []float32, seed uint64, world int, avg bool) {
	clear(dst)
	for r := 0; r < world; r++ {
		fill(tmp, seed, r)
		for i, v := range tmp {
			dst[i] += float64(v)
		}
	}
	if avg {
		for i := range dst {
			dst[i] /= float64(world)
		}
	}
}

// perRank is what each rank reports for one size.
type perRank struct {
	hash                [32]byte
	timeNs              int64                       // summed over the timed iterations
	wireBytes, rawBytes int64                       // summed over the timed iterations
	allocBytes          int64                       // heap allocated over the timed iterations
	quantNs             [len(timePercentiles)]int64 // timeQuantiles of the timed iterations
}

func (p perRank) marshal() []byte {
	words := []uint64{uint64(p.timeNs), uint64(p.wireBytes), uint64(p.rawBytes), uint64(p.allocBytes)}
	for _, q := range p.quantNs {
		words = append(words, uint64(q))
	}
	return jobcmd.Report{Hash: p.hash, Words: words}.Marshal()
}

func unmarshalPerRank(b []byte) (perRank, error) {
	r, err := jobcmd.UnmarshalReport(b, 4+len(timePercentiles))
	if err != nil {
		return perRank{}, err
	}
	p := perRank{hash: r.Hash, timeNs: int64(r.Words[0]), wireBytes: int64(r.Words[1]), rawBytes: int64(r.Words[2]), allocBytes: int64(r.Words[3])}
	for i := range p.quantNs {
		p.quantNs[i] = int64(r.Words[4+i])
	}
	return p, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, cfg, err := jobcmd.Setup(args, stderr, parseFlags)
	if err != nil {
		return err
	}
	comm, err := collective.Init(ctx, cfg)
	if err != nil {
		return err
	}
	defer jobcmd.Close(comm, stderr, &err)
	rank, world := comm.Rank(), comm.Size()
	szs := sizes(o.minBytes, o.maxBytes, o.factor)
	maxCount := int(szs[len(szs)-1] / 4)
	input := make([]float32, maxCount)
	fill(input, o.seed, rank)
	work := make([]float32, maxCount)
	var exact []float64
	var tmp []float32
	if o.check == 1 {
		exact = make([]float64, maxCount)
		tmp = make([]float32, maxCount)
	}

	if o.cpuProfile != "" {
		stop, err := startProfile(fmt.Sprintf("%s.%d", o.cpuProfile, rank))
		if err != nil {
			return fmt.Errorf("rank %d: %w", rank, err)
		}
		defer stop()
	}

	table := rank == 0 && !o.json
	if table {
		fmt.Fprintf(stdout, "# vccl allreduce_perf: %d ranks, codec %s", world, cfg.Codec)
		if cfg.Codec == "h264" || cfg.Codec == "hevc" {
			fmt.Fprintf(stdout, " (backend %s, target %.2f bits/value)", cfg.Backend, cfg.BitsPerValue)
		}
		fmt.Fprintf(stdout, "\n# minBytes %d maxBytes %d step: %d(factor) warmup iters: %d iters: %d validation: %d seed: %d\n#\n",
			o.minBytes, o.maxBytes, o.factor, o.warmup, o.iters, o.check, o.seed)
		fmt.Fprintf(stdout, "#%11s %13s %9s %7s %6s %10s %8s %8s %6s %7s %7s %13s %10s\n",
			"size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "codec", "bpv", "wire", "nmse")
		fmt.Fprintf(stdout, "#%11s %13s %9s %7s %6s %10s %8s %8s %6s %7s %7s %13s %10s\n",
			"(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "", "", "(B)", "")
	}
	var opts []collective.Option
	if o.op == "avg" {
		opts = append(opts, collective.WithAverage())
	}
	opts = append(opts, collective.WithErrorFeedback(false), collective.WithoutWarmup())
	var busSum float64
	totalWrong := 0
	for _, size := range szs {
		count := int(size / 4)
		bytes := int64(count) * 4
		data := work[:count]
		callOpts := append(append([]collective.Option(nil), opts...), collective.WithStream(fmt.Sprintf("allreduce_perf/%d", count)))
		var me perRank
		var codecUsed string
		var ms runtime.MemStats
		iterNs := make([]int64, 0, o.iters)
		for it := 0; it < o.warmup+o.iters; it++ {
			if it == o.warmup {
				runtime.ReadMemStats(&ms)
				me.allocBytes = -int64(ms.TotalAlloc)
			}
			copy(data, input[:count])
			start := time.Now()
			st, err := comm.AllReduce(ctx, data, callOpts...)
			el := time.Since(start)
			if err != nil {
				return fmt.Errorf("size %d: iteration %d: %w", bytes, it, err)
			}
			if it >= o.warmup {
				me.timeNs += el.Nanoseconds()
				iterNs = append(iterNs, el.Nanoseconds())
				me.wireBytes += st.WireBytes
				me.rawBytes += st.RawBytes
				codecUsed = st.Codec
			}
		}
		runtime.ReadMemStats(&ms)
		me.allocBytes += int64(ms.TotalAlloc)
		me.quantNs = timeQuantiles(iterNs)
		res := result{Size: bytes, Count: count, Type: "float", Redop: o.op, Root: -1, Wrong: -1, NMSE: -1,
			Codec: codecUsed, Ranks: world, Iters: o.iters}
		if o.check == 1 {
			copy(data, input[:count])
			if _, err := comm.AllReduce(ctx, data, callOpts...); err != nil {
				return fmt.Errorf("size %d: check: %w", bytes, err)
			}
			me.hash = f32hash.Sum(data)
			exactResult(exact[:count], tmp[:count], o.seed, world, o.op == "avg")
			res.NMSE = metric.NMSE(data, exact[:count])
		}
		parts, err := comm.AllGather(ctx, me.marshal())
		if err != nil {
			return fmt.Errorf("size %d: gathering results: %w", bytes, err)
		}
		var maxNs int64
		var quantNs [len(timePercentiles)]int64
		var wire, raw int64
		wrong := 0
		var wrongRanks []string
		var h0 [32]byte
		for r, b := range parts {
			p, err := unmarshalPerRank(b)
			if err != nil {
				return fmt.Errorf("size %d: from rank %d: %w", bytes, r, err)
			}
			if r == 0 {
				h0 = p.hash
			} else if p.hash != h0 {
				wrong++
				wrongRanks = append(wrongRanks, strconv.Itoa(r))
			}
			maxNs = max(maxNs, p.timeNs)
			for i, q := range p.quantNs {
				quantNs[i] = max(quantNs[i], q)
			}
			res.AllocBytes = max(res.AllocBytes, p.allocBytes/int64(o.iters))
			wire += p.wireBytes
			raw += p.rawBytes
		}
		if o.check == 1 {
			res.Wrong = wrong
			totalWrong += wrong
			if wrong > 0 && rank == 0 {
				fmt.Fprintf(stderr, "allreduce_perf: size %d: result of rank(s) %s differs from rank 0's\n", bytes, strings.Join(wrongRanks, ","))
			}
		}
		res.TimeUs = float64(maxNs) / float64(o.iters) / 1e3
		for i, dst := range [...]*float64{&res.TimeP10Us, &res.TimeP50Us, &res.TimeP90Us, &res.TimeMaxUs} {
			*dst = float64(quantNs[i]) / 1e3
		}
		if res.TimeUs > 0 {
			res.AlgBW = float64(bytes) / (res.TimeUs * 1e-6) / 1e9
		}
		res.BusBW = res.AlgBW * 2 * float64(world-1) / float64(world)
		res.WireBytes = wire / int64(o.iters)
		res.RawBytes = raw / int64(o.iters)
		if raw > 0 {
			res.BPV = 32 * float64(wire) / float64(raw)
		}
		busSum += res.BusBW
		if rank != 0 {
			continue
		}
		if o.json {
			b, err := json.Marshal(res)
			if err != nil {
				return fmt.Errorf("size %d: %w", bytes, err)
			}
			fmt.Fprintf(stdout, "%s\n", b)
			continue
		}
		wrongCol, nmseCol := "N/A", "N/A"
		if o.check == 1 {
			wrongCol, nmseCol = strconv.Itoa(res.Wrong), fmt.Sprintf("%.3e", res.NMSE)
		}
		fmt.Fprintf(stdout, "%12d %13d %9s %7s %6d %10.1f %8.3f %8.3f %6s %7s %7.3f %13d %10s\n",
			res.Size, res.Count, res.Type, res.Redop, res.Root, res.TimeUs, res.AlgBW, res.BusBW,
			wrongCol, res.Codec, res.BPV, res.WireBytes, nmseCol)
	}
	if table {
		status := "OK"
		if totalWrong > 0 {
			status = "FAILED"
		}
		if o.check == 1 {
			fmt.Fprintf(stdout, "# Out of bounds values : %d %s\n", totalWrong, status)
		}
		fmt.Fprintf(stdout, "# Avg bus bandwidth    : %.5g \n#\n", busSum/float64(len(szs)))
	}
	if totalWrong > 0 {
		return fmt.Errorf("rank %d: %d mismatching rank results: %w", rank, totalWrong, errWrong)
	}
	return nil
}

// startProfile starts a CPU profile written to path; stop ends it.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
