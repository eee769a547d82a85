package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbinet/npyio"
)

func writeNPY(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := npyio.Write(f, v); err != nil {
		t.Fatal(err)
	}
}

func heavyTailed(n int) []float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() / math.Sqrt(rng.ExpFloat64()) * 1e-3)
	}
	return x
}

func TestJSONLines(t *testing.T) {
	dir := t.TempDir()
	// 2-D: npyio writes a *[rows][cols]float32 as a 2-D array.
	m := new([64][300]float32)
	x := heavyTailed(64 * 300)
	for r := range m {
		copy(m[r][:], x[r*300:(r+1)*300])
	}
	writeNPY(t, filepath.Join(dir, "a.npy"), m)
	writeNPY(t, filepath.Join(dir, "b.npy"), heavyTailed(5000)) // 1-D
	var out bytes.Buffer
	if err := run([]string{"-json", "-codec", "h264,int8,raw", "-bpv", "1.0,2.0", dir}, &out); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&out)
	lines := 0
	for sc.Scan() {
		lines++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Text())
		}
		for _, k := range []string{"file", "shape", "codec", "target_bpv", "bpv", "nmse", "snr_db", "encode_mvals", "decode_mvals"} {
			if _, ok := rec[k]; !ok {
				t.Fatalf("line %d lacks %q: %s", lines, k, sc.Text())
			}
		}
		codec, bpv, nmse := rec["codec"].(string), rec["bpv"].(float64), rec["nmse"].(float64)
		switch codec {
		case "raw":
			if nmse != 0 || bpv < 32 {
				t.Errorf("raw: bpv %v NMSE %v", bpv, nmse)
			}
		case "h264":
			target := rec["target_bpv"].(float64)
			if math.Abs(bpv/target-1) > 0.15 || nmse >= 1 {
				t.Errorf("h264 target %v: bpv %v NMSE %v", target, bpv, nmse)
			}
		}
	}
	// 2 files × (h264 at 2 rates + int8 + raw).
	if lines != 8 {
		t.Fatalf("%d lines, want 8:\n%s", lines, out.String())
	}
}

func TestTable(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "v.npy")
	writeNPY(t, p, heavyTailed(4096))
	var out bytes.Buffer
	if err := run([]string{"-codec", "int8", p}, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "NMSE") || !strings.Contains(s, "v.npy") || !strings.Contains(s, "64x64") {
		t.Fatalf("table:\n%s", s)
	}
}

func TestRejectsUnsupported(t *testing.T) {
	dir := t.TempDir()
	f64 := filepath.Join(dir, "f64.npy")
	writeNPY(t, f64, []float64{1, 2, 3})
	three := filepath.Join(dir, "three.npy")
	writeNPY(t, three, new([2][2][2]float32))
	junk := filepath.Join(dir, "junk.npy")
	if err := os.WriteFile(junk, []byte("not numpy"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{f64: "<f8", three: "3-D", junk: "not a .npy"} {
		err := run([]string{"-codec", "raw", path}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %q", filepath.Base(path), err, want)
		}
	}
	if err := run([]string{"-codec", "av1", f64}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "av1") {
		t.Errorf("unknown codec: %v", err)
	}
	if err := run([]string{"-bpv", "x", f64}, &bytes.Buffer{}); err == nil {
		t.Error("bad -bpv accepted")
	}
}
