// Package results reads the machine-readable outputs of vccl's benchmarks —
// allreduce_perf's -json lines (as collected by bench/netring.sh) and
// codec_rd's -json lines — and turns them into tables and plot series.
//
// Both tools print one JSON object per line. The readers here accept lines
// as they come out of the launcher too ("[0] {…}"), skip everything that is
// not a JSON object, and name the line of anything that is malformed.
package results

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrNoRecords is returned when an input holds no usable JSON line.
var ErrNoRecords = errors.New("results: no records")

// Perf is one allreduce_perf measurement (one size of one job).
type Perf struct {
	Rate      string  // link rate in tc syntax ("1gbit"), added by netring.sh; "loopback" or "" when unshaped
	RateBPS   float64 // Rate in bits per second; 0 when unknown
	Delay     string  // netem delay, "0" when none
	Hosts     int     // ranks in the ring
	Codec     string  // raw, fp16, h264, hevc, …
	Size      int64   // bytes of float32 data per rank (uncompressed)
	TimeUS    float64 // mean time of one allreduce, microseconds
	AlgBW     float64 // GB/s, Size/time
	BusBW     float64 // GB/s, AlgBW*2(n-1)/n, from the uncompressed size
	BPV       float64 // achieved bits per value on the wire; 32 for raw
	WireBytes int64   // payload bytes rank 0 sent, 0 when not reported
	NMSE      float64 // error against the exact sum; NaN when not reported
	Wrong     int     // ranks whose result differs from rank 0's; -1 when unchecked
	Sweep     int     // which repetition of the whole benchmark (netring.sh --sweeps), from 1; 0 when untagged
	Alloc     int64   // heap bytes allocated per allreduce on the rank that allocated most; -1 when not reported
}

// RD is one codec_rd measurement: one tensor file through one codec at one
// target rate.
type RD struct {
	File        string
	Shape       string
	Codec       string
	TargetBPV   float64
	BPV         float64
	NMSE        float64
	SNRdB       float64
	EncodeMvals float64 // encode speed, million values per second
	DecodeMvals float64 // decode speed, million values per second
}

var launcherPrefix = regexp.MustCompile(`^\s*\[\d+\]\s*`)

// jsonLines calls fn for every line of r that holds a JSON object, after
// removing a launcher prefix ("[3] "). lineNo counts from 1.
func jsonLines(r io.Reader, fn func(lineNo int, obj map[string]any) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := launcherPrefix.ReplaceAllString(sc.Text(), "")
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var obj map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return fmt.Errorf("results: line %d: %w", n, err)
		}
		if err := fn(n, obj); err != nil {
			return fmt.Errorf("results: line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("results: reading input: %w", err)
	}
	return nil
}

// num returns the first of keys present in obj as a float64.
func num(obj map[string]any, keys ...string) (float64, bool) {
	for _, k := range keys {
		v, ok := obj[k]
		if !ok || v == nil {
			continue
		}
		switch x := v.(type) {
		case json.Number:
			f, err := x.Float64()
			if err == nil {
				return f, true
			}
		case float64:
			return x, true
		case string:
			if f, err := strconv.ParseFloat(x, 64); err == nil {
				return f, true
			}
			if f, err := ParseSize(x); err == nil {
				return float64(f), true
			}
		}
	}
	return 0, false
}

// str returns the first of keys present in obj as a string.
func str(obj map[string]any, keys ...string) string {
	for _, k := range keys {
		switch x := obj[k].(type) {
		case string:
			return x
		case json.Number:
			return x.String()
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			return strings.Join(parts, "x")
		}
	}
	return ""
}

// readRecords calls parse for every line of r that holds a JSON object
// and collects the records it returns; parse reports ok false to skip a
// line, and an error stops the reading. Where no line gave a record it
// returns ErrNoRecords.
func readRecords[T any](r io.Reader, parse func(obj map[string]any) (rec T, ok bool, err error)) ([]T, error) {
	var out []T
	err := jsonLines(r, func(_ int, obj map[string]any) error {
		rec, ok, err := parse(obj)
		if err != nil || !ok {
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoRecords
	}
	return out, nil
}

// ReadPerf reads allreduce_perf -json lines (optionally tagged by netring.sh
// with rate, delay and hosts). Lines that are JSON objects without a size
// (summary lines) are skipped.
func ReadPerf(r io.Reader) ([]Perf, error) {
	return readRecords(r, func(obj map[string]any) (Perf, bool, error) {
		size, ok := num(obj, "size", "bytes", "size_bytes")
		if !ok {
			return Perf{}, false, nil // not a per-size record
		}
		p := Perf{
			Rate:  str(obj, "rate"),
			Delay: str(obj, "delay"),
			Codec: str(obj, "codec"),
			Size:  int64(size),
			NMSE:  math.NaN(),
			Wrong: -1,
		}
		if p.Rate == "loopback" {
			p.RateBPS = math.Inf(1) // unshaped: sorts first
		} else if p.Rate != "" {
			bps, err := ParseRate(p.Rate)
			if err != nil {
				return Perf{}, false, err
			}
			p.RateBPS = bps
		}
		if h, ok := num(obj, "hosts", "nranks", "world_size", "ranks", "n"); ok {
			p.Hosts = int(h)
		}
		t, ok := num(obj, "time_us", "time(us)", "avg_time_us", "time")
		if !ok || t <= 0 {
			return Perf{}, false, fmt.Errorf("record for size %d has no positive time_us", p.Size)
		}
		p.TimeUS = t
		if v, ok := num(obj, "algbw", "algbw_gbps", "alg_bw"); ok {
			p.AlgBW = v
		} else {
			p.AlgBW = float64(p.Size) / (t * 1e3)
		}
		if v, ok := num(obj, "busbw", "busbw_gbps", "bus_bw"); ok {
			p.BusBW = v
		} else if p.Hosts > 0 {
			p.BusBW = p.AlgBW * 2 * float64(p.Hosts-1) / float64(p.Hosts)
		}
		if v, ok := num(obj, "bpv", "bits_per_value", "achieved_bpv"); ok {
			p.BPV = v
		}
		if v, ok := num(obj, "wire_bytes", "wire", "wirebytes"); ok {
			p.WireBytes = int64(v)
		}
		if v, ok := num(obj, "nmse"); ok && v >= 0 {
			p.NMSE = v // allreduce_perf writes -1 when it did not check
		}
		if v, ok := num(obj, "wrong", "#wrong", "n_wrong"); ok {
			p.Wrong = int(v)
		}
		if v, ok := num(obj, "sweep"); ok {
			p.Sweep = int(v)
		}
		p.Alloc = -1
		if v, ok := num(obj, "alloc_bytes"); ok {
			p.Alloc = int64(v)
		}
		return p, true, nil
	})
}

// ReadRD reads codec_rd -json lines.
func ReadRD(r io.Reader) ([]RD, error) {
	return readRecords(r, func(obj map[string]any) (RD, bool, error) {
		c := str(obj, "codec")
		bpv, ok := num(obj, "bpv")
		if c == "" || !ok {
			return RD{}, false, nil
		}
		nmse, ok := num(obj, "nmse")
		if !ok {
			return RD{}, false, fmt.Errorf("codec %s record has no nmse", c)
		}
		d := RD{File: str(obj, "file"), Shape: str(obj, "shape"), Codec: c, BPV: bpv, NMSE: nmse}
		d.TargetBPV, _ = num(obj, "target_bpv")
		d.SNRdB, _ = num(obj, "snr_db")
		d.EncodeMvals, _ = num(obj, "encode_mvals")
		d.DecodeMvals, _ = num(obj, "decode_mvals")
		return d, true, nil
	})
}

// ParseRate reads a tc rate ("100mbit", "1gbit", "500kbit", "12mbps") and
// returns bits per second.
func ParseRate(s string) (float64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mul    float64
	}{
		{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3},
		{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8}, {"bit", 1},
	}
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(t, u.suffix), 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("results: bad rate %q", s)
			}
			return v * u.mul, nil
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("results: bad rate %q (want e.g. 100mbit)", s)
	}
	return v, nil
}

// ParseSize reads a byte count with an optional K/M/G suffix (powers of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mul := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K', 'k':
			mul, t = 1<<10, t[:n-1]
		case 'M', 'm':
			mul, t = 1<<20, t[:n-1]
		case 'G', 'g':
			mul, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("results: bad size %q", s)
	}
	return v * mul, nil
}

// FormatSize writes a byte count the way the size flags read it (64M, 1K, 100).
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// Row is one line of the netring table.
type Row struct {
	Perf
	Speedup float64 // raw's time / this time at the same rate, delay, hosts and size; NaN without a raw row
}

type groupKey struct {
	rate, delay string
	hosts       int
	size        int64
}

// Table orders records by rate (fastest first), size, then codec as given
// in codecOrder (others after, by name), and computes each row's speedup
// versus the raw record of the same rate, delay, hosts and size.
func Table(recs []Perf, codecOrder []string) []Row {
	raw := map[groupKey]float64{}
	for _, p := range recs {
		if p.Codec == "raw" {
			raw[groupKey{p.Rate, p.Delay, p.Hosts, p.Size}] = p.TimeUS
		}
	}
	rank := map[string]int{}
	for i, c := range codecOrder {
		rank[c] = i + 1
	}
	rows := make([]Row, len(recs))
	for i, p := range recs {
		rows[i] = Row{Perf: p, Speedup: math.NaN()}
		if t, ok := raw[groupKey{p.Rate, p.Delay, p.Hosts, p.Size}]; ok {
			rows[i].Speedup = t / p.TimeUS
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return orderKey{a.RateBPS, a.Delay, a.Size, a.Codec}.less(orderKey{b.RateBPS, b.Delay, b.Size, b.Codec}, rank, len(codecOrder)+1)
	})
	return rows
}

// orderKey is what Table and Compare order rows by.
type orderKey struct {
	rateBPS float64
	delay   string
	size    int64
	codec   string
}

// less orders rate (fastest first), delay, size, then codec by rank (a
// codec missing from rank counts as unranked), ties by codec name.
func (a orderKey) less(b orderKey, rank map[string]int, unranked int) bool {
	if a.rateBPS != b.rateBPS {
		return a.rateBPS > b.rateBPS
	}
	if a.delay != b.delay {
		return a.delay < b.delay
	}
	if a.size != b.size {
		return a.size < b.size
	}
	ra, rb := rank[a.codec], rank[b.codec]
	if ra == 0 {
		ra = unranked
	}
	if rb == 0 {
		rb = unranked
	}
	if ra != rb {
		return ra < rb
	}
	return a.codec < b.codec
}

// WriteTable prints rows as an aligned text table: rate, delay, hosts,
// size, codec, time per allreduce, effective bus bandwidth, speedup versus
// raw, achieved bits/value, NMSE and #wrong.
func WriteTable(w io.Writer, rows []Row) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %-8s %6s %5s %7s %6s %12s %12s %8s %6s %9s %6s\n",
		"rate", "delay", "hosts", "size", "codec", "time(ms)", "busbw(GB/s)", "speedup", "bpv", "nmse", "#wrong")
	for _, r := range rows {
		rate, delay := orEmpty(r.Rate, "-"), orEmpty(r.Delay, "0")
		sp := ratioCell(r.Speedup)
		nmse := "-"
		if !math.IsNaN(r.NMSE) {
			nmse = fmt.Sprintf("%.2e", r.NMSE)
		}
		wrong := wrongCell(r.Wrong)
		fmt.Fprintf(&b, "  %-8s %6s %5d %7s %6s %12.1f %12.3f %8s %6.2f %9s %6s\n",
			rate, delay, r.Hosts, FormatSize(r.Size), r.Codec, r.TimeUS/1e3, r.BusBW, sp, r.BPV, nmse, wrong)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// orEmpty is s, or empty when s is "" (the table cell of an unset field).
func orEmpty(s, empty string) string {
	if s == "" {
		return empty
	}
	return s
}

// ratioCell is x as "1.23x", or "-" when x is NaN (no reference row).
func ratioCell(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// wrongCell is the #wrong cell: the count, or "-" when unchecked (< 0).
func wrongCell(n int) string {
	if n < 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// Baselines are the codec names of the uncompressed torch.distributed
// reference (bench/torch_allreduce.py), which Compare measures against.
var Baselines = []string{"gloo", "nccl"}

// CompareRow is one line of the comparison table: one rate, delay, hosts,
// size and codec over every sweep.
type CompareRow struct {
	Rate, Delay string
	RateBPS     float64
	Hosts       int
	Size        int64
	Codec       string
	Times       []float64 // microseconds, one per sweep in sweep order
	Median      float64   // microseconds
	Spread      float64   // slowest / fastest sweep
	VsBase      float64   // this median / the baseline's median at the same rate, delay, hosts and size; NaN without one
	Base        string    // the baseline VsBase is against
	BPV         float64
	Wrong       int   // the largest #wrong of any sweep; -1 unchecked
	Alloc       int64 // the largest alloc_bytes of any sweep; -1 unknown
}

func median(x []float64) float64 {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	n := len(y)
	if n%2 == 1 {
		return y[n/2]
	}
	return (y[n/2-1] + y[n/2]) / 2
}

// Compare groups records of several sweeps by rate, delay, hosts, size and
// codec, and compares each group's median time with the baseline's (gloo,
// else nccl) in the same setting. Rows are ordered as Table orders them,
// baselines first.
func Compare(recs []Perf, codecOrder []string) []CompareRow {
	type key struct {
		groupKey
		codec string
	}
	groups := map[key][]Perf{}
	var order []key
	for _, p := range recs {
		k := key{groupKey{p.Rate, p.Delay, p.Hosts, p.Size}, p.Codec}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	rows := make([]CompareRow, 0, len(order))
	base := map[groupKey]CompareRow{}
	for _, k := range order {
		g := groups[k]
		sort.SliceStable(g, func(i, j int) bool { return g[i].Sweep < g[j].Sweep })
		r := CompareRow{Rate: k.rate, Delay: k.delay, RateBPS: g[0].RateBPS, Hosts: k.hosts, Size: k.size, Codec: k.codec,
			BPV: g[0].BPV, Wrong: -1, Alloc: -1, VsBase: math.NaN()}
		lo, hi := math.Inf(1), 0.0
		for _, p := range g {
			r.Times = append(r.Times, p.TimeUS)
			lo, hi = min(lo, p.TimeUS), max(hi, p.TimeUS)
			r.Wrong = max(r.Wrong, p.Wrong)
			r.Alloc = max(r.Alloc, p.Alloc)
		}
		r.Median, r.Spread = median(r.Times), hi/lo
		rows = append(rows, r)
		for i := len(Baselines) - 1; i >= 0; i-- {
			if k.codec == Baselines[i] {
				if _, ok := base[k.groupKey]; !ok || i == 0 {
					base[k.groupKey] = r
				}
			}
		}
	}
	for i := range rows {
		if b, ok := base[groupKey{rows[i].Rate, rows[i].Delay, rows[i].Hosts, rows[i].Size}]; ok {
			rows[i].VsBase, rows[i].Base = rows[i].Median/b.Median, b.Codec
		}
	}
	rank := map[string]int{}
	for i, c := range append(append([]string(nil), Baselines...), codecOrder...) {
		if _, ok := rank[c]; !ok {
			rank[c] = i + 1
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return orderKey{a.RateBPS, a.Delay, a.Size, a.Codec}.less(orderKey{b.RateBPS, b.Delay, b.Size, b.Codec}, rank, len(rank)+1)
	})
	return rows
}

// WriteCompare prints the comparison table: per row the median time over
// the sweeps, each sweep's time, the spread (slowest/fastest sweep), the
// ratio to the baseline's median (time/baseline: below 1 is faster), bits
// per value, #wrong and the heap allocated per allreduce.
func WriteCompare(w io.Writer, rows []CompareRow) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %-8s %6s %5s %7s %6s %10s %8s %9s %6s %9s %6s  %s\n",
		"rate", "delay", "hosts", "size", "codec", "median(ms)", "spread", "vs-base", "bpv", "alloc/op", "#wrong", "sweeps(ms)")
	for _, r := range rows {
		rate, delay := orEmpty(r.Rate, "-"), orEmpty(r.Delay, "0")
		vs := ratioCell(r.VsBase)
		alloc := "-"
		if r.Alloc >= 0 {
			alloc = FormatBytes(r.Alloc)
		}
		wrong := wrongCell(r.Wrong)
		var ts []string
		for _, t := range r.Times {
			ts = append(ts, fmt.Sprintf("%.1f", t/1e3))
		}
		fmt.Fprintf(&b, "  %-8s %6s %5d %7s %6s %10.2f %7.2fx %9s %6.2f %9s %6s  %s\n",
			rate, delay, r.Hosts, FormatSize(r.Size), r.Codec, r.Median/1e3, r.Spread, vs, r.BPV, alloc, wrong, strings.Join(ts, " "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatBytes writes a byte count with a binary unit (512B, 3.2K, 1.5M).
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
