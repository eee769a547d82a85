// Command plot draws vccl's benchmark results to PNG with gonum/plot:
//
//   - speedup.png: allreduce speedup versus raw fp32 as a function of link
//     rate, one line per codec (and size), from netring.sh's records
//     (bench/netring.sh --json-out DIR writes DIR/netring.jsonl) or from
//     allreduce_perf -json output tagged with a rate;
//   - busbw.png: effective bus bandwidth (uncompressed bytes/s) versus link
//     rate, from the same records;
//   - rd.png: rate-distortion, NMSE (log scale) versus achieved bits per
//     value, one line per codec, from examples/codec_rd -json output.
//
// Usage:
//
//	go run ./examples/plot -perf results/netring.jsonl -rd rd.jsonl -out plots/
//
// -perf and -rd each take a comma-separated list of files; either may be
// left out. Lines that are not JSON objects (table text, launcher
// prefixes) are skipped.
package main

import (
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/vccl/vccl/bench/results"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	perf := fs.String("perf", "", "comma-separated allreduce_perf/netring -json files (records need a rate)")
	rd := fs.String("rd", "", "comma-separated codec_rd -json files")
	out := fs.String("out", ".", "output directory for the PNGs")
	width := fs.Float64("width", 16, "image width in cm")
	height := fs.Float64("height", 11, "image height in cm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *perf == "" && *rd == "" {
		fs.Usage()
		return errors.New("nothing to plot: give -perf and/or -rd")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	w, h := vg.Length(*width)*vg.Centimeter, vg.Length(*height)*vg.Centimeter
	if *perf != "" {
		recs, err := readFiles(*perf, results.ReadPerf)
		if err != nil {
			return err
		}
		sp, bw, err := perfPlots(recs)
		if err != nil {
			return err
		}
		for name, p := range map[string]*plot.Plot{"speedup.png": sp, "busbw.png": bw} {
			path := filepath.Join(*out, name)
			if err := p.Save(w, h, path); err != nil {
				return fmt.Errorf("saving %s: %w", path, err)
			}
			fmt.Fprintln(stdout, "wrote", path)
		}
	}
	if *rd != "" {
		recs, err := readFiles(*rd, results.ReadRD)
		if err != nil {
			return err
		}
		p, err := rdPlot(recs)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, "rd.png")
		if err := p.Save(w, h, path); err != nil {
			return fmt.Errorf("saving %s: %w", path, err)
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// readFiles reads the records of every file in the comma-separated list.
func readFiles[T any](list string, read func(io.Reader) ([]T, error)) ([]T, error) {
	var recs []T
	for _, f := range splitList(list) {
		r, err := readFile(f, read)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r...)
	}
	return recs, nil
}

func readFile[T any](path string, read func(io.Reader) ([]T, error)) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// series is one line of a plot.
type series struct {
	label string
	pts   plotter.XYs
}

func sortedSeries(m map[string]plotter.XYs) []series {
	out := make([]series, 0, len(m))
	for k, v := range m {
		sort.Slice(v, func(i, j int) bool { return v[i].X < v[j].X })
		out = append(out, series{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].label < out[j].label })
	return out
}

// perfPlots builds speedup-vs-rate and busbw-vs-rate plots. Records of the
// same codec, size, rate and delay are averaged.
func perfPlots(recs []results.Perf) (speedup, busbw *plot.Plot, err error) {
	var withRate []results.Perf
	sizes := map[int64]bool{}
	for _, r := range recs {
		if r.RateBPS > 0 {
			withRate = append(withRate, r)
			sizes[r.Size] = true
		}
	}
	if len(withRate) == 0 {
		return nil, nil, errors.New("-perf: no record carries a link rate (run bench/netring.sh --json-out, or add \"rate\" to each line)")
	}
	rows := results.Table(withRate, nil)
	sp := map[string]plotter.XYs{}
	bw := map[string]plotter.XYs{}
	for _, r := range rows {
		label := r.Codec
		if len(sizes) > 1 {
			label += " " + results.FormatSize(r.Size)
		}
		if r.Delay != "" && r.Delay != "0" {
			label += " +" + r.Delay
		}
		x := r.RateBPS / 1e6
		if !math.IsNaN(r.Speedup) {
			sp[label] = append(sp[label], plotter.XY{X: x, Y: r.Speedup})
		}
		bw[label] = append(bw[label], plotter.XY{X: x, Y: r.BusBW})
	}
	if len(sp) == 0 {
		return nil, nil, errors.New("-perf: no raw records to compute speedups against (include codec raw)")
	}
	speedup = newPlot("allreduce speedup vs raw fp32", "link rate (Mbit/s)", "speedup (raw time / codec time)", true, false)
	if err := addLines(speedup, sortedSeries(sp)); err != nil {
		return nil, nil, err
	}
	speedup.Y.Min = 0
	speedup.Y.Max *= 1.3 // room for the legend
	one := plotter.NewFunction(func(float64) float64 { return 1 })
	one.Color = color.Gray{Y: 128}
	one.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	speedup.Add(one)
	busbw = newPlot("effective bus bandwidth (uncompressed)", "link rate (Mbit/s)", "busbw (GB/s)", true, true)
	if err := addLines(busbw, sortedSeries(bw)); err != nil {
		return nil, nil, err
	}
	busbw.Y.Max *= 2 // room for the legend (log axis)
	return speedup, busbw, nil
}

// rdPlot builds NMSE-vs-bpv curves, one per codec: points at the same
// codec and target rate are averaged over files (geometric mean of NMSE).
func rdPlot(recs []results.RD) (*plot.Plot, error) {
	type key struct {
		codec  string
		target float64
	}
	type acc struct {
		bpv, logNMSE float64
		n            int
	}
	groups := map[key]*acc{}
	for _, r := range recs {
		if r.NMSE <= 0 || math.IsNaN(r.NMSE) || math.IsInf(r.NMSE, 0) || r.BPV <= 0 {
			continue // log axis: exact (lossless) or broken points cannot be drawn
		}
		t := r.TargetBPV
		if t == 0 {
			t = r.BPV
		}
		k := key{r.Codec, t}
		a := groups[k]
		if a == nil {
			a = &acc{}
			groups[k] = a
		}
		a.bpv += r.BPV
		a.logNMSE += math.Log10(r.NMSE)
		a.n++
	}
	if len(groups) == 0 {
		return nil, errors.New("-rd: no record with a positive, finite nmse and bpv")
	}
	m := map[string]plotter.XYs{}
	for k, a := range groups {
		m[k.codec] = append(m[k.codec], plotter.XY{X: a.bpv / float64(a.n), Y: math.Pow(10, a.logNMSE/float64(a.n))})
	}
	p := newPlot("rate-distortion", "achieved bits per value", "NMSE", false, true)
	if err := addLines(p, sortedSeries(m)); err != nil {
		return nil, err
	}
	p.Y.Max *= 3 // room for the legend (log axis)
	return p, nil
}

func newPlot(title, x, y string, logX, logY bool) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: 1} // 1e-05, not 9.999999999999999e-06
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = false
	return p
}

func addLines(p *plot.Plot, ss []series) error {
	for i, s := range ss {
		l, pts, err := plotter.NewLinePoints(s.pts)
		if err != nil {
			return fmt.Errorf("series %s: %w", s.label, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		pts.Radius = vg.Points(3)
		p.Add(l, pts)
		p.Legend.Add(s.label, l, pts)
	}
	p.Legend.ThumbnailWidth = vg.Points(20)
	return nil
}
