package main

import (
	"bytes"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writePerf writes netring-style records: raw time follows the link rate,
// compressed codecs are bounded by a fixed codec time.
func writePerf(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# a table line that must be skipped\n")
	for _, rate := range []struct {
		name string
		bps  float64
	}{{"10gbit", 10e9}, {"1gbit", 1e9}, {"100mbit", 100e6}} {
		size := 64 << 20
		rawUS := float64(size) * 8 * 1.5 / rate.bps * 1e6
		for _, c := range []struct {
			name   string
			bpv    float64
			codecS float64
		}{{"raw", 32, 0}, {"fp16", 16, 0.01}, {"hevc", 1.4, 2.0}} {
			us := rawUS*c.bpv/32 + c.codecS*1e6
			fmt.Fprintf(&b, "[0] {\"rate\":%q,\"delay\":\"0\",\"hosts\":4,\"codec\":%q,\"size\":%d,\"time_us\":%g,\"bpv\":%g}\n",
				rate.name, c.name, size, us, c.bpv)
		}
	}
	p := filepath.Join(dir, "perf.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeRD(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"a.npy", "b.npy"} {
		for _, c := range []string{"h264", "hevc", "int8"} {
			for _, bpv := range []float64{0.5, 1, 1.4, 2, 4} {
				nmse := math.Pow(2, -2*bpv)
				if c == "hevc" {
					nmse *= 0.7
				}
				fmt.Fprintf(&b, `{"file":%q,"shape":[256,784],"codec":%q,"target_bpv":%g,"bpv":%g,"nmse":%g,"snr_db":%g,"encode_mvals":50,"decode_mvals":120}`+"\n",
					f, c, bpv, bpv*1.02, nmse, -10*math.Log10(nmse))
			}
		}
	}
	p := filepath.Join(dir, "rd.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlotWritesPNGs(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("PLOT_TEST_OUT"); d != "" { // keep the PNGs to look at them
		dir = d
	}
	perf, rd := writePerf(t, dir), writeRD(t, dir)
	out := filepath.Join(dir, "out")
	var stdout bytes.Buffer
	if err := run([]string{"-perf", perf, "-rd", rd, "-out", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"speedup.png", "busbw.png", "rd.png"} {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s not written: %v (stdout %q)", name, err, stdout.String())
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s is not a PNG: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
			t.Errorf("%s is %v, too small", name, b)
		}
		// A plot with lines is not a blank canvas: count non-white pixels.
		nonWhite := 0
		for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
			for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				if r < 0xf000 || g < 0xf000 || b < 0xf000 {
					nonWhite++
				}
			}
		}
		if nonWhite < 1000 {
			t.Errorf("%s has only %d non-white pixels", name, nonWhite)
		}
	}
}

func TestPlotErrors(t *testing.T) {
	dir := t.TempDir()
	noRate := filepath.Join(dir, "norate.jsonl")
	os.WriteFile(noRate, []byte(`{"codec":"raw","size":1024,"time_us":10}`+"\n"), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"codec":"raw","size":1024,"time_us":`+"\n"), 0o644)
	noRaw := filepath.Join(dir, "noraw.jsonl")
	os.WriteFile(noRaw, []byte(`{"rate":"1gbit","codec":"hevc","size":1024,"time_us":10}`+"\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "nothing to plot"},
		{[]string{"-perf", filepath.Join(dir, "missing.jsonl")}, "missing.jsonl"},
		{[]string{"-perf", noRate, "-out", dir}, "link rate"},
		{[]string{"-perf", bad, "-out", dir}, "line 1"},
		{[]string{"-perf", noRaw, "-out", dir}, "raw"},
		{[]string{"-rd", noRate, "-out", dir}, "no records"},
	}
	for _, c := range cases {
		err := run(c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
}
