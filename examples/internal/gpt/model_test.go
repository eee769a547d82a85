package gpt

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var tiny = Config{Vocab: 11, Ctx: 5, Dim: 8, Heads: 2, Layers: 2, Hidden: 12}

// tinyModel returns a tiny model with parameters drawn at a scale where
// every gradient is well away from zero, and a batch of n random sequences.
func tinyModel(t *testing.T, n int) *Model {
	t.Helper()
	m, err := New(tiny, 3, n)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ts := range m.Tensors() {
		base := 0.0
		if strings.HasSuffix(ts.Name, ".g") {
			base = 1
		}
		for i := range ts.Param {
			ts.Param[i] = float32(base + 0.4*rng.NormFloat64())
		}
	}
	tok, tgt := m.Tokens(n)
	for i := range tok {
		tok[i], tgt[i] = uint16(rng.IntN(tiny.Vocab)), uint16(rng.IntN(tiny.Vocab))
	}
	return m
}

func meanLoss(m *Model, n int) float64 {
	m.Forward(n)
	return m.Loss() / float64(n*m.Cfg.Ctx)
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	const n = 3
	m := tinyModel(t, n)
	m.Forward(n)
	var order []int
	loss, err := m.Backward(func(i int) { order = append(order, i) })
	if err != nil {
		t.Fatal(err)
	}
	if l := meanLoss(m, n); math.Abs(l-loss) > 1e-5 {
		t.Errorf("Backward loss %v, Loss() %v", loss, l)
	}
	ts := m.Tensors()
	if len(order) != len(ts) || order[0] != len(ts)-1 || order[len(order)-1] != 0 {
		t.Errorf("tensors finished in order %v: want each of %d once, head.w first, wte last", order, len(ts))
	}
	sorted := slices.Clone(order)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("tensors finished in order %v: not each once", order)
		}
	}
	grads := slices.Clone(m.Grads)
	const eps = 1e-2
	var sumDiff, sumNum float64
	off := 0
	for _, tn := range ts {
		var tDiff, tNum float64
		for i := range tn.Param {
			orig := tn.Param[i]
			tn.Param[i] = orig + eps
			lp := meanLoss(m, n)
			tn.Param[i] = orig - eps
			lm := meanLoss(m, n)
			tn.Param[i] = orig
			num := (lp - lm) / (2 * eps)
			a := float64(grads[off+i])
			if d := math.Abs(num - a); d > 3e-4+3e-2*math.Abs(num) {
				t.Errorf("%s[%d]: analytic gradient %.6f, numeric %.6f", tn.Name, i, a, num)
			}
			tDiff += math.Abs(num - a)
			tNum += math.Abs(num)
		}
		if tNum < 1e-3*float64(len(tn.Param)) {
			t.Errorf("%s: gradients too small to check (mean |g| %.2g)", tn.Name, tNum/float64(len(tn.Param)))
		}
		if tDiff > 5e-3*tNum {
			t.Errorf("%s: relative L1 error %.2g of the analytic gradient", tn.Name, tDiff/tNum)
		}
		sumDiff += tDiff
		sumNum += tNum
		off += len(tn.Param)
	}
	t.Logf("%d parameters, relative L1 error %.2g", off, sumDiff/sumNum)
}

// TestCausal checks that the logits at a position do not depend on later
// tokens.
func TestCausal(t *testing.T) {
	m := tinyModel(t, 1)
	before := slices.Clone(m.Forward(1))
	tok, _ := m.Tokens(1)
	tok[tiny.Ctx-1] = (tok[tiny.Ctx-1] + 1) % uint16(tiny.Vocab)
	after := m.Forward(1)
	V := tiny.Vocab
	if !slices.Equal(before[:(tiny.Ctx-1)*V], after[:(tiny.Ctx-1)*V]) {
		t.Error("changing the last token changed the logits of earlier positions")
	}
	if slices.Equal(before[(tiny.Ctx-1)*V:], after[(tiny.Ctx-1)*V:]) {
		t.Error("changing the last token did not change its own logits")
	}
}

func TestTensorsAreViews(t *testing.T) {
	m, err := New(DefaultConfig, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, tn := range m.Tensors() {
		if len(tn.Grad) != tn.Rows*tn.Cols || len(tn.Param) != len(tn.Grad) {
			t.Errorf("%s: len %d/%d for %d×%d", tn.Name, len(tn.Param), len(tn.Grad), tn.Rows, tn.Cols)
		}
		if tn.Decay != (tn.Rows > 1) {
			t.Errorf("%s %d×%d: Decay %v", tn.Name, tn.Rows, tn.Cols, tn.Decay)
		}
		tn.Grad[0] = float32(i + 1)
		if m.Grads[total] != float32(i+1) {
			t.Errorf("%s.Grad is not a view at offset %d of Grads", tn.Name, total)
		}
		total += len(tn.Grad)
	}
	if total != m.NumParams() {
		t.Errorf("tensors cover %d values, model has %d", total, m.NumParams())
	}
	a, _ := New(DefaultConfig, 7, 1)
	b, _ := New(DefaultConfig, 7, 1)
	c, _ := New(DefaultConfig, 8, 1)
	if a.Hash() != b.Hash() || a.Hash() == c.Hash() {
		t.Error("hash does not follow the seed")
	}
}

func TestAdamWAndSchedule(t *testing.T) {
	m := tinyModel(t, 1)
	p0 := slices.Clone(m.Params)
	for i := range m.Grads {
		m.Grads[i] = 0.5
	}
	opt, err := NewAdamW(m, 0.9, 0.99, 1e-8, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	opt.Step(0.01, 2) // the first Adam step moves every parameter by lr·sign(g)
	off := 0
	for _, tn := range m.Tensors() {
		for i := range tn.Param {
			want := p0[off+i] - 0.01
			if tn.Decay {
				want = p0[off+i]*(1-0.01*0.1) - 0.01
			}
			if math.Abs(float64(tn.Param[i]-want)) > 1e-6 {
				t.Fatalf("%s[%d]: %v, want %v", tn.Name, i, tn.Param[i], want)
			}
		}
		off += len(tn.Param)
	}
	// With the variance frozen after the first step, a gradient 10× larger
	// moves the parameters 10× further (Adam without freezing would not).
	f, _ := NewAdamW(m, 0.9, 0.99, 1e-8, 0)
	f.FreezeVarianceAfter = 1
	f.Step(0.01, 1)
	p1 := slices.Clone(m.Params)
	f.Step(0.01, 10)
	// m = 0.9·0.05 + 0.1·5 = 0.545; lr·m/(1−0.9²) / (sqrt(v/(1−0.99))) with v = 0.01·0.25.
	want := 0.01 * (0.545 / (1 - 0.81)) / math.Sqrt(0.0025/0.01)
	if d := float64(p1[0] - m.Params[0]); math.Abs(d-want) > 1e-5 {
		t.Errorf("step with frozen variance moved %v, want %v", d, want)
	}
	s := Schedule{Peak: 1, MinFrac: 0.1, Warmup: 10, Total: 110}
	for _, c := range []struct {
		step int
		want float64
	}{{1, 0.1}, {10, 1}, {60, 0.55}, {110, 0.1}, {200, 0.1}} {
		if got := s.At(c.step); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("lr at step %d: %v, want %v", c.step, got, c.want)
		}
	}
	if _, err := NewAdamW(m, 1, 0.99, 1e-8, 0); err == nil {
		t.Error("beta1 1 accepted")
	}
}

func TestCorpusSplitsWholeFiles(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 10; i++ {
		sub := filepath.Join(dir, "p"+string(rune('a'+i%3)))
		os.MkdirAll(sub, 0o755)
		os.WriteFile(filepath.Join(sub, "f"+string(rune('0'+i))+".go"), []byte(strings.Repeat(string(rune('a'+i)), 50)), 0o644)
	}
	os.MkdirAll(filepath.Join(dir, "testdata"), 0o755)
	os.WriteFile(filepath.Join(dir, "testdata", "x.go"), []byte("ignored"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	var trains []string
	var val string
	for r := 0; r < 2; r++ {
		c, err := LoadCorpus(dir, r, 2, 5, 8)
		if err != nil {
			t.Fatal(err)
		}
		if c.Files != 10 || c.ValFiles != 2 || c.TrainFiles != 4 {
			t.Errorf("rank %d: %d files, %d train, %d val", r, c.Files, c.TrainFiles, c.ValFiles)
		}
		if r > 0 && string(c.Val) != val {
			t.Error("ranks see different validation splits")
		}
		val = string(c.Val)
		trains = append(trains, string(c.Train))
	}
	for _, tr := range trains {
		for _, v := range []byte(val) {
			if strings.IndexByte(tr, v) >= 0 {
				t.Fatalf("a validation file's bytes %q are in a training shard", v)
			}
		}
	}
	if trains[0] == trains[1] {
		t.Error("both ranks got the same shard")
	}
	if _, err := LoadCorpus(dir, 0, 2, 5, 500); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("context longer than the shard: %v", err)
	}
	var counts [256]uint64
	counts['z'] = 100
	data := []byte(strings.Repeat("z", 40))
	if p := UnigramPerplexity(&counts, data, ValWindows(data, 3, 8), 8); math.Abs(p-356.0/101) > 1e-9 {
		t.Errorf("unigram perplexity %v, want %v", p, 356.0/101)
	}
}

// BenchmarkStep is one training step of the examples' model (forward,
// backward, AdamW) on a batch of 16 sequences of 64 bytes.
func BenchmarkStep(b *testing.B) {
	const n = 16
	m, err := New(DefaultConfig, 1, n)
	if err != nil {
		b.Fatal(err)
	}
	opt, _ := NewAdamW(m, 0.9, 0.99, 1e-8, 0.1)
	rng := rand.New(rand.NewPCG(1, 2))
	tok, tgt := m.Tokens(n)
	for i := range tok {
		tok[i], tgt[i] = uint16(rng.IntN(256)), uint16(rng.IntN(256))
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Forward(n)
		if _, err := m.Backward(nil); err != nil {
			b.Fatal(err)
		}
		opt.Step(1e-3, 1)
	}
	b.ReportMetric(float64(n*m.Cfg.Ctx)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}
