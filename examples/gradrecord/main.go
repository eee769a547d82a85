// Command gradrecord trains the examples' MNIST MLP (784-256-128-10, SGD
// momentum 0.9, lr 0.1, batch 64) in a single process and writes every
// layer's weight and bias gradient, as float32 .npy files, at chosen steps.
// With -model gpt it trains examples/lm's byte-level transformer instead
// (its default shape and recipe: 16 sequences of 64 bytes of the Go source
// tree per step, AdamW with lr 3e-3 after 100 warm-up steps, cosine decay
// over 1200 steps, weight decay 0.1, gradient norm clipped to 1) and writes
// its 2-D gradients (embeddings, attention and MLP matrices, output head).
// The files feed examples/codec_rd, which measures the codecs' rate and
// distortion on real gradients.
//
// Usage:
//
//	go run ./examples/gradrecord -out grads -steps 1,50,200,500
//	go run ./examples/gradrecord -model gpt -out lmgrads -steps 1,50,200,500
//
// writes grads/step0001_w1.npy (256×784), grads/step0001_b1.npy (256,), … —
// weights shaped rows×cols as the model stores them (Out×In, like PyTorch's
// nn.Linear), biases 1-D; for gpt lmgrads/step0001_h0_attn_qkv_w.npy, … (the
// tensor's name with dots as underscores). Steps count from 1; a step's
// gradient is the one the optimizer applies at that step.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/sbinet/npyio"

	"github.com/vccl/vccl/examples/internal/gpt"
	"github.com/vccl/vccl/examples/internal/mlp"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gradrecord:", err)
		os.Exit(1)
	}
}

func parseSteps(s string) ([]int, error) {
	var steps []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-steps: %q is not a step number >= 1", f)
		}
		steps = append(steps, n)
	}
	if len(steps) == 0 {
		return nil, errors.New("-steps: no steps given")
	}
	slices.Sort(steps)
	return slices.Compact(steps), nil
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gradrecord", flag.ContinueOnError)
	out := fs.String("out", "grads", "directory to write the .npy files into (created if missing)")
	stepsFlag := fs.String("steps", "1,50,200,500", "comma-separated training steps (from 1) whose gradients are written")
	batch := fs.Int("batch", mlp.DefaultBatchSize, "batch size")
	seed := fs.Uint64("seed", mlp.DefaultSeed, "initialisation and shuffling seed")
	lr := fs.Float64("lr", mlp.DefaultLR, "SGD learning rate")
	momentum := fs.Float64("momentum", mlp.DefaultMomentum, "SGD momentum")
	data := fs.String("data", "", "MNIST: directory holding the .gz files (default: the GoMNIST module in the Go module cache); gpt: the source tree to train on (default: $(go env GOROOT)/src)")
	model := fs.String("model", "mlp", "mlp (the MNIST MLP) or gpt (examples/lm's transformer; -batch, -lr and -momentum are the MLP's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	steps, err := parseSteps(*stepsFlag)
	if err != nil {
		return err
	}
	switch *model {
	case "mlp":
	case "gpt":
		return recordGPT(*out, *data, steps, *seed, stdout)
	default:
		return fmt.Errorf("-model %q: want mlp or gpt", *model)
	}
	if *batch < 1 {
		return fmt.Errorf("-batch %d: must be at least 1", *batch)
	}
	train, _, err := mlp.LoadMNIST(*data)
	if err != nil {
		return err
	}
	if *batch > train.N {
		return fmt.Errorf("-batch %d: larger than the %d training samples", *batch, train.N)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("creating -out: %w", err)
	}
	m, err := mlp.New(mlp.DefaultSizes, *seed, *batch)
	if err != nil {
		return err
	}
	labels := make([]uint8, *batch)
	last := steps[len(steps)-1]
	next := 0
	var idx []int
	pos, epoch := 0, -1
	for step := 1; step <= last; step++ {
		if pos+*batch > len(idx) { // drop the ragged tail, start the next epoch
			epoch++
			if idx, err = mlp.Shard(train.N, 0, 1, *seed, epoch); err != nil {
				return err
			}
			pos = 0
		}
		b := idx[pos : pos+*batch]
		pos += *batch
		train.Fill(m.Input(len(b)), labels, b)
		m.Forward(len(b))
		loss, err := m.Backward(labels, nil)
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if step == steps[next] {
			files, err := writeGrads(*out, step, m)
			if err != nil {
				return fmt.Errorf("step %d: %w", step, err)
			}
			fmt.Fprintf(stdout, "step %d loss %.4f: wrote %s\n", step, loss, strings.Join(files, " "))
			next++
		}
		m.Step(float32(*lr), float32(*momentum))
	}
	return nil
}

// writeGrads writes every tensor's gradient of m into dir as
// step%04d_<name>.npy and returns the file names.
func writeGrads(dir string, step int, m *mlp.Model) ([]string, error) {
	var names []string
	for _, t := range m.Tensors() {
		name := fmt.Sprintf("step%04d_%s.npy", step, t.Name)
		var val any = t.Grad
		if !t.Bias {
			val = asMatrix(t.Grad, t.Rows, t.Cols)
		}
		if err := writeNPY(filepath.Join(dir, name), val); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// asMatrix views data as a *[rows][cols]float32, which npyio writes as a
// float32 array of shape (rows, cols) (it has no shaped writer for float32
// slices, and its mat.Dense path is float64).
func asMatrix(data []float32, rows, cols int) any {
	if len(data) != rows*cols || len(data) == 0 {
		panic(fmt.Sprintf("gradrecord: %d values for a %d×%d matrix", len(data), rows, cols))
	}
	typ := reflect.ArrayOf(rows, reflect.ArrayOf(cols, reflect.TypeFor[float32]()))
	return reflect.NewAt(typ, unsafe.Pointer(&data[0])).Interface()
}

func writeNPY(path string, val any) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing gradient: %w", err)
	}
	w := bufio.NewWriter(f)
	if err := npyio.Write(w, val); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// recordGPT trains examples/lm's transformer with lm's default recipe on one
// rank and writes its 2-D gradients at steps.
func recordGPT(dir, data string, steps []int, seed uint64, stdout io.Writer) error {
	const (
		batch, warmup, total, valEvery = 16, 100, 1200, 20
		lr, minLR, wd, clip            = 3e-3, 0.1, 0.1, 1.0
	)
	if seed == mlp.DefaultSeed {
		seed = 1 // examples/lm's default
	}
	if data == "" {
		root := runtime.GOROOT() //nolint:staticcheck // the toolchain's own tree, as examples/lm uses
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			root = strings.TrimSpace(string(out))
		}
		if root == "" {
			return errors.New("-model gpt: no corpus: pass -data")
		}
		data = filepath.Join(root, "src")
	}
	cfg := gpt.DefaultConfig
	corpus, err := gpt.LoadCorpus(data, 0, 1, valEvery, cfg.Ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating -out: %w", err)
	}
	m, err := gpt.New(cfg, seed, batch)
	if err != nil {
		return err
	}
	opt, err := gpt.NewAdamW(m, 0.9, 0.99, 1e-8, wd)
	if err != nil {
		return err
	}
	sched := gpt.Schedule{Peak: lr, MinFrac: minLR, Warmup: warmup, Total: total}
	next := 0
	for step := 1; step <= steps[len(steps)-1]; step++ {
		tok, tgt := m.Tokens(batch)
		gpt.FillBatch(tok, tgt, corpus.Train, batch, cfg.Ctx, seed, 0, step)
		m.Forward(batch)
		loss, err := m.Backward(func(int) {})
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if step == steps[next] {
			var names []string
			for _, t := range m.Tensors() {
				if t.Rows < 2 || t.Cols < 2 {
					continue // biases and norms
				}
				name := fmt.Sprintf("step%04d_%s.npy", step, strings.ReplaceAll(t.Name, ".", "_"))
				if err := writeNPY(filepath.Join(dir, name), asMatrix(t.Grad, t.Rows, t.Cols)); err != nil {
					return fmt.Errorf("step %d: %w", step, err)
				}
				names = append(names, name)
			}
			fmt.Fprintf(stdout, "step %d loss %.4f: wrote %s\n", step, loss, strings.Join(names, " "))
			next++
		}
		scale := 1.0
		if norm := gpt.GradNorm(m); norm > clip {
			scale = clip / norm
		}
		opt.Step(sched.At(step), scale)
	}
	return nil
}
