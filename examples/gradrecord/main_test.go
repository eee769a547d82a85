package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbinet/npyio/npy"

	"github.com/vccl/vccl/examples/internal/gpt"
	"github.com/vccl/vccl/examples/internal/mlp"
)

func readNPY(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := npy.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.Header.Descr.Type != "<f4" {
		t.Errorf("%s: dtype %s, want <f4", path, r.Header.Descr.Type)
	}
	var data []float32
	if err := r.Read(&data); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r.Header.Descr.Shape, data
}

func TestRecordsGradientsThatRoundTrip(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := run([]string{"-out", dir, "-steps", "2,1"}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "wrote") != 2 {
		t.Errorf("output:\n%s", out.String())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 12 {
		t.Errorf("%d files written, want 12", len(ents))
	}

	// Recompute step 1's gradient independently and compare bit for bit.
	train, _, err := mlp.LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mlp.New(mlp.DefaultSizes, mlp.DefaultSeed, mlp.DefaultBatchSize)
	idx, _ := mlp.Shard(train.N, 0, 1, mlp.DefaultSeed, 0)
	labels := make([]uint8, mlp.DefaultBatchSize)
	train.Fill(m.Input(mlp.DefaultBatchSize), labels, idx[:mlp.DefaultBatchSize])
	m.Forward(mlp.DefaultBatchSize)
	if _, err := m.Backward(labels, nil); err != nil {
		t.Fatal(err)
	}
	for _, tn := range m.Tensors() {
		shape, data := readNPY(t, filepath.Join(dir, "step0001_"+tn.Name+".npy"))
		want := []int{tn.Rows, tn.Cols}
		if tn.Bias {
			want = []int{tn.Cols}
		}
		if !slices.Equal(shape, want) {
			t.Errorf("%s: shape %v, want %v", tn.Name, shape, want)
		}
		if !slices.Equal(data, tn.Grad) {
			t.Errorf("%s: step 1 gradient in the file differs from a recomputation", tn.Name)
		}
		_, d2 := readNPY(t, filepath.Join(dir, "step0002_"+tn.Name+".npy"))
		if slices.Equal(d2, data) {
			t.Errorf("%s: steps 1 and 2 wrote the same gradient", tn.Name)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-steps", "0"},
		{"-steps", "x"},
		{"-steps", ""},
		{"-batch", "0"},
		{"-data", t.TempDir()},
		{"extra"},
	} {
		if err := run(append([]string{"-out", t.TempDir()}, args...), io.Discard); err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
}

// TestRecordsTransformerGradients records two steps of examples/lm's
// transformer on this repository's own sources and checks every 2-D
// gradient is written with its shape, and that the steps differ.
func TestRecordsTransformerGradients(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := run([]string{"-model", "gpt", "-data", "../..", "-out", dir, "-steps", "1,2"}, &out); err != nil {
		t.Fatal(err)
	}
	m, err := gpt.New(gpt.DefaultConfig, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tn := range m.Tensors() {
		if tn.Rows < 2 || tn.Cols < 2 {
			continue
		}
		n++
		name := strings.ReplaceAll(tn.Name, ".", "_") + ".npy"
		shape, d1 := readNPY(t, filepath.Join(dir, "step0001_"+name))
		if !slices.Equal(shape, []int{tn.Rows, tn.Cols}) {
			t.Errorf("%s: shape %v, want %dx%d", tn.Name, shape, tn.Rows, tn.Cols)
		}
		_, d2 := readNPY(t, filepath.Join(dir, "step0002_"+name))
		if slices.Equal(d1, d2) {
			t.Errorf("%s: steps 1 and 2 wrote the same gradient", tn.Name)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2*n || n == 0 {
		t.Errorf("%d files written, want %d", len(ents), 2*n)
	}
	if err := run([]string{"-model", "cnn", "-out", dir}, &out); err == nil || !strings.Contains(err.Error(), "-model") {
		t.Errorf("-model cnn: %v", err)
	}
}
