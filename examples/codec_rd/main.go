// Command codec_rd measures the rate and distortion of vccl's tensor codecs
// on tensors stored as NumPy .npy files (float32, little-endian, C order,
// 1-D or 2-D). For every file × codec × target rate it prints the shape,
// the codec, the target and achieved bits per value (whole frame: header,
// scales and checksum included), the NMSE ‖x−x̂‖²/‖x‖², the SNR in dB, and
// encode and decode speed in Mvalues/s.
//
// Usage:
//
//	go run ./examples/codec_rd -codec h264,hevc,int8 -bpv 1.0,1.4,2.0 grads/*.npy
//	go run ./examples/codec_rd -json grads/        # a folder: every .npy in it
//
// Each measurement uses a fresh encoder (a new stream): a first encode does
// the stream's rate search and opens the codec contexts, then a second,
// timed encode of the same tensor is the one reported (use -cold to report
// the first instead). 2-D arrays keep their rows × cols layout; 1-D arrays
// get gradcodec.ShapeFor's near-square layout.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sbinet/npyio/npy"

	"github.com/vccl/vccl/gradcodec"
	_ "github.com/vccl/vccl/gradcodec/video" // h264 and hevc
	"github.com/vccl/vccl/internal/metric"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "codec_rd:", err)
		os.Exit(1)
	}
}

// rateControlled reports whether codec takes a target rate (-bpv).
func rateControlled(codec string) bool {
	return codec == "tensor" || codec == "h264" || codec == "hevc"
}

// Result is one line of output; the JSON keys are part of the tool's
// interface.
type Result struct {
	File        string  `json:"file"`
	Shape       [2]int  `json:"shape"`
	Codec       string  `json:"codec"`
	TargetBPV   float64 `json:"target_bpv"`
	BPV         float64 `json:"bpv"`
	NMSE        float64 `json:"nmse"`
	SNRdB       float64 `json:"snr_db"`
	EncodeMvals float64 `json:"encode_mvals"`
	DecodeMvals float64 `json:"decode_mvals"`
	Bytes       int     `json:"bytes"`
	Values      int     `json:"values"`
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("codec_rd", flag.ContinueOnError)
	codecs := fs.String("codec", "h264,hevc,int8", "comma-separated codecs: "+strings.Join(gradcodec.Codecs(), ", "))
	bpvs := fs.String("bpv", "1.4", "comma-separated target bits per value (tensor and video codecs; others have a fixed rate)")
	asJSON := fs.Bool("json", false, "print one JSON object per line instead of a table")
	backend := fs.String("backend", "software", "video backend: auto, nvenc or software")
	preset := fs.String("preset", "", "encoder preset (default: the codec's default)")
	cold := fs.Bool("cold", false, "report a stream's first frame (rate search included) instead of the second")
	cpu := fs.Bool("cputime", false, "compute speeds from the process's CPU time instead of wall time (steadier on a busy machine)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: codec_rd [flags] file.npy|dir ...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	files, err := expand(fs.Args())
	if err != nil {
		return err
	}
	if len(files) == 0 {
		fs.Usage()
		return errors.New("no .npy files given")
	}
	codecList := splitList(*codecs)
	for _, c := range codecList {
		if !contains(gradcodec.Codecs(), c) {
			return fmt.Errorf("-codec: unknown codec %q (have %s)", c, strings.Join(gradcodec.Codecs(), ", "))
		}
	}
	var rates []float64
	for _, s := range splitList(*bpvs) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0 && v <= 16) {
			return fmt.Errorf("-bpv: %q is not a rate in (0, 16]", s)
		}
		rates = append(rates, v)
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "file\tshape\tcodec\ttarget\tbits/value\tNMSE\tSNR dB\tenc Mval/s\tdec Mval/s\t")
	}
	enc := json.NewEncoder(out)
	for _, file := range files {
		x, shape, err := readNPY(file)
		if err != nil {
			return err
		}
		for _, codec := range codecList {
			targets := rates
			if !rateControlled(codec) {
				targets = rates[:1] // fixed-rate codecs: one line
			}
			for _, bpv := range targets {
				r, err := measure(x, shape, gradcodec.Options{Codec: codec, Backend: *backend, BitsPerValue: bpv, Preset: *preset}, *cold, *cpu)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				r.File = file
				if !rateControlled(codec) {
					r.TargetBPV = 0
				}
				if *asJSON {
					if err := enc.Encode(r); err != nil {
						return err
					}
					continue
				}
				target := "-"
				if r.TargetBPV > 0 {
					target = strconv.FormatFloat(r.TargetBPV, 'f', 2, 64)
				}
				fmt.Fprintf(tw, "%s\t%dx%d\t%s\t%s\t%.3f\t%.4f\t%.2f\t%.1f\t%.1f\t\n",
					filepath.Base(r.File), r.Shape[0], r.Shape[1], r.Codec, target, r.BPV, r.NMSE, r.SNRdB, r.EncodeMvals, r.DecodeMvals)
			}
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// measure encodes x twice with a fresh encoder and decodes the reported
// frame with a fresh decoder.
func measure(x []float32, shape gradcodec.Shape, opts gradcodec.Options, cold, cpu bool) (Result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	now := time.Now
	if cpu {
		now = threadCPU
	}
	r := Result{Shape: [2]int{shape.Rows, shape.Cols}, Codec: opts.Codec, TargetBPV: opts.BitsPerValue, Values: len(x)}
	e, err := gradcodec.NewEncoder(opts)
	if err != nil {
		return r, err
	}
	defer e.Close()
	d, err := gradcodec.NewDecoder(opts.Backend)
	if err != nil {
		return r, err
	}
	defer d.Close()
	t0 := now()
	frame, err := e.Encode(nil, x, shape)
	te := now().Sub(t0)
	if err != nil {
		return r, err
	}
	if !cold {
		// The reported frame is the second one (rate control has settled);
		// further encodes of the same input only lengthen the timing.
		if frame, err = e.Encode(frame[:0], x, shape); err != nil {
			return r, err
		}
		scratch := make([]byte, 0, len(frame))
		if te, err = timePerRun(now, func() error {
			_, err := e.Encode(scratch[:0], x, shape)
			return err
		}); err != nil {
			return r, err
		}
	}
	y := make([]float32, len(x))
	if !cold { // warm the decoder's contexts too
		if err := d.Decode(y, frame); err != nil {
			return r, err
		}
	}
	td, err := timePerRun(now, func() error { return d.Decode(y, frame) })
	if err != nil {
		return r, err
	}
	r.Bytes = len(frame)
	r.BPV = 8 * float64(len(frame)) / float64(len(x))
	r.NMSE = metric.NMSE32(y, x) // ‖y−x‖²/‖x‖²
	r.SNRdB = -10 * math.Log10(r.NMSE)
	if math.IsInf(r.SNRdB, 1) {
		r.SNRdB = 999 // exact; JSON has no +Inf
	}
	r.EncodeMvals = mvalsPerSecond(len(x), te)
	r.DecodeMvals = mvalsPerSecond(len(x), td)
	return r, nil
}

// minTiming is how long timePerRun repeats a call: CPU time advances in
// scheduler ticks, so one encode of a small tensor can measure as zero.
const minTiming = 20 * time.Millisecond

// timePerRun calls f until minTiming has elapsed on the clock now (at least
// once) and returns the mean duration of one call.
func timePerRun(now func() time.Time, f func() error) (time.Duration, error) {
	start := now()
	for runs := 1; ; runs++ {
		if err := f(); err != nil {
			return 0, err
		}
		if d := now().Sub(start); d >= minTiming || runs >= 1000 {
			return d / time.Duration(runs), nil
		}
	}
}

// mvalsPerSecond returns n values per d in millions per second, or 0 when d
// measured as zero (JSON has no +Inf).
func mvalsPerSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// threadCPU returns the CPU time of the process (the codecs run on the
// calling thread, x265 also on threads of its own) as a time.Time offset
// from the zero time (only differences are meaningful).
func threadCPU() time.Time {
	var ru syscall.Rusage
	const rusageSelf = 0 // RUSAGE_SELF: all threads (x265 encodes on its own threads)
	if err := syscall.Getrusage(rusageSelf, &ru); err != nil {
		return time.Now()
	}
	return time.Time{}.Add(time.Duration(ru.Utime.Nano() + ru.Stime.Nano()))
}

// readNPY reads a float32 little-endian C-order 1-D or 2-D array.
func readNPY(path string) ([]float32, gradcodec.Shape, error) {
	// npyio v0.6.0 reads each value with a single Read call and takes a
	// short read for the value: give it a reader that never reads short.
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, gradcodec.Shape{}, err
	}
	r, err := npy.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: not a .npy file: %w", path, err)
	}
	d := r.Header.Descr
	if d.Type != "<f4" {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: dtype %q is not supported, want float32 little-endian ('<f4')", path, d.Type)
	}
	if d.Fortran {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: Fortran-order arrays are not supported, save with C order", path)
	}
	var shape gradcodec.Shape
	switch len(d.Shape) {
	case 1:
		shape = gradcodec.ShapeFor(d.Shape[0])
	case 2:
		shape = gradcodec.Shape{Rows: d.Shape[0], Cols: d.Shape[1]}
	default:
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: %d-D array %v is not supported, want 1-D or 2-D", path, len(d.Shape), d.Shape)
	}
	if shape.Len() == 0 {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: empty array %v", path, d.Shape)
	}
	var x []float32
	if err := r.Read(&x); err != nil {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: reading data: %w", path, err)
	}
	if len(x) != shape.Len() {
		return nil, gradcodec.Shape{}, fmt.Errorf("%s: %d values for shape %v", path, len(x), d.Shape)
	}
	return x, shape, nil
}

// expand turns arguments into .npy files: folders give every *.npy in them.
func expand(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		m, err := filepath.Glob(filepath.Join(a, "*.npy"))
		if err != nil {
			return nil, err
		}
		sort.Strings(m)
		if len(m) == 0 {
			return nil, fmt.Errorf("%s: no .npy files in this folder", a)
		}
		files = append(files, m...)
	}
	return files, nil
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

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
