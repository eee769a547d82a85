// Package mlp is the small multilayer perceptron that vccl's examples train on
// MNIST: fully connected layers with ReLU between them, softmax cross-entropy
// at the end, and SGD with momentum. Parameters and gradients are float32 and
// live in two flat buffers, so a gradient can go to the wire without copying
// and a parameter hash covers the whole model in one pass.
//
// Weights are stored the way PyTorch's nn.Linear stores them: layer l's weight
// is Out×In, row-major. Its gradient has the same shape, so the codec sees a
// picture with one row per output neuron.
//
// All buffers a training step needs are allocated once by New; Forward,
// Backward and Step do not allocate.
package mlp

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/vccl/vccl/examples/internal/f32hash"
)

// DefaultSizes are the layer widths of the examples' model: 784-256-128-10.
var DefaultSizes = []int{784, 256, 128, 10}

// Recipe defaults of the examples (issue 5).
const (
	DefaultLR        = 0.1 // SGD learning rate
	DefaultMomentum  = 0.9 // SGD momentum
	DefaultBatchSize = 64  // samples per rank per step
	DefaultSeed      = 4   // initialisation and shuffling seed
)

// Tensor is one named parameter tensor of the model together with its
// gradient. Param and Grad are views into Model.Params and Model.Grads.
type Tensor struct {
	// Name is "w1", "b1", "w2", … (layer numbers start at 1).
	Name string
	// Rows and Cols give the 2-D shape: Out×In for a weight, 1×Out for a bias.
	Rows, Cols int
	// Bias reports whether the tensor is a bias (logically 1-D).
	Bias bool
	// Param holds the values, Grad the gradient of the last Backward.
	Param, Grad []float32
}

// Layer is one fully connected layer; its slices are views into the model's
// flat buffers.
type Layer struct {
	In, Out int
	W, B    []float32 // W is Out×In row-major, B has Out values
	GW, GB  []float32 // gradients, same shapes
}

// Model is the MLP with its parameters, gradients, momentum buffer and the
// per-batch workspace for batches of up to MaxBatch samples.
type Model struct {
	// Sizes are the layer widths, input first.
	Sizes []int
	// Layers holds len(Sizes)-1 layers.
	Layers []Layer
	// Params and Grads are every parameter and gradient, flat, in the order
	// w1, b1, w2, b2, ….
	Params, Grads []float32
	// MaxBatch is the largest batch Forward and Backward accept.
	MaxBatch int

	vel    []float32   // momentum buffer
	acts   [][]float32 // acts[0] input, acts[l+1] output of layer l (logits for the last)
	deltas [][]float32 // deltas[l]: dLoss/dz of layer l (pre-activation)
	n      int         // batch size of the last Forward
}

// New builds a model with the given layer sizes and PyTorch's default
// nn.Linear initialisation (weights and biases uniform in ±1/sqrt(In)), drawn
// from a generator seeded with seed, so every rank that uses the same seed
// holds the same model. maxBatch sizes the workspace.
func New(sizes []int, seed uint64, maxBatch int) (*Model, error) {
	if len(sizes) < 2 {
		return nil, fmt.Errorf("mlp: need at least 2 layer sizes, got %v", sizes)
	}
	for i, s := range sizes {
		if s <= 0 {
			return nil, fmt.Errorf("mlp: layer size %d is %d, must be positive", i, s)
		}
	}
	if maxBatch <= 0 {
		return nil, fmt.Errorf("mlp: max batch %d must be positive", maxBatch)
	}
	total := 0
	for l := 0; l+1 < len(sizes); l++ {
		total += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	m := &Model{
		Sizes:    append([]int(nil), sizes...),
		Params:   make([]float32, total),
		Grads:    make([]float32, total),
		vel:      make([]float32, total),
		MaxBatch: maxBatch,
	}
	rng := rand.New(rand.NewPCG(seed, 0x766363_6c6d6c70))
	off := 0
	for l := 0; l+1 < len(sizes); l++ {
		in, out := sizes[l], sizes[l+1]
		ly := Layer{In: in, Out: out}
		ly.W, ly.GW = m.Params[off:off+in*out:off+in*out], m.Grads[off:off+in*out:off+in*out]
		off += in * out
		ly.B, ly.GB = m.Params[off:off+out:off+out], m.Grads[off:off+out:off+out]
		off += out
		bound := 1 / math.Sqrt(float64(in))
		for i := range ly.W {
			ly.W[i] = float32((2*rng.Float64() - 1) * bound)
		}
		for i := range ly.B {
			ly.B[i] = float32((2*rng.Float64() - 1) * bound)
		}
		m.Layers = append(m.Layers, ly)
	}
	m.acts = make([][]float32, len(sizes))
	m.deltas = make([][]float32, len(m.Layers))
	for i, s := range sizes {
		m.acts[i] = make([]float32, maxBatch*s)
	}
	for l, ly := range m.Layers {
		m.deltas[l] = make([]float32, maxBatch*ly.Out)
	}
	return m, nil
}

// NumParams returns the number of parameters.
func (m *Model) NumParams() int { return len(m.Params) }

// Tensors returns the model's tensors in forward order: w1, b1, w2, b2, ….
// Backward finishes them in the reverse order.
func (m *Model) Tensors() []Tensor {
	ts := make([]Tensor, 0, 2*len(m.Layers))
	for l, ly := range m.Layers {
		ts = append(ts,
			Tensor{Name: fmt.Sprintf("w%d", l+1), Rows: ly.Out, Cols: ly.In, Param: ly.W, Grad: ly.GW},
			Tensor{Name: fmt.Sprintf("b%d", l+1), Rows: 1, Cols: ly.Out, Bias: true, Param: ly.B, Grad: ly.GB})
	}
	return ts
}

// Input returns the workspace for a batch of n inputs (n×Sizes[0] values,
// row-major) for the caller to fill before Forward. It panics if n is out of
// range (a programming error).
func (m *Model) Input(n int) []float32 {
	m.checkBatch(n)
	return m.acts[0][:n*m.Sizes[0]]
}

func (m *Model) checkBatch(n int) {
	if n <= 0 || n > m.MaxBatch {
		panic(fmt.Sprintf("mlp: batch of %d samples outside 1..%d", n, m.MaxBatch))
	}
}

func general(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// Forward runs the batch of n samples already written into Input(n) and
// returns the logits, n×Sizes[last] values (a view into the workspace, valid
// until the next Forward).
func (m *Model) Forward(n int) []float32 {
	m.checkBatch(n)
	m.n = n
	for l, ly := range m.Layers {
		x := general(n, ly.In, m.acts[l])
		z := general(n, ly.Out, m.acts[l+1])
		// z = x · Wᵀ + b
		for i := 0; i < n; i++ {
			copy(z.Data[i*ly.Out:(i+1)*ly.Out], ly.B)
		}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, x, general(ly.Out, ly.In, ly.W), 1, z)
		if l+1 < len(m.Layers) {
			for i, v := range z.Data {
				if v < 0 {
					z.Data[i] = 0
				}
			}
		}
	}
	return m.acts[len(m.Layers)][:n*m.Sizes[len(m.Sizes)-1]]
}

// softmaxCE turns one row of logits into probabilities in place and returns
// the cross-entropy for label y.
func softmaxCE(row []float32, y int) float64 {
	mx := row[0]
	for _, v := range row[1:] {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range row {
		e := math.Exp(float64(v - mx))
		row[i] = float32(e)
		sum += e
	}
	inv := 1 / sum
	py := float64(row[y]) * inv
	for i := range row {
		row[i] = float32(float64(row[i]) * inv)
	}
	return -math.Log(max(py, 1e-300))
}

// Loss returns the summed cross-entropy of the last Forward's logits against
// labels and the number of correct predictions, without changing anything.
func (m *Model) Loss(labels []uint8) (lossSum float64, correct int, err error) {
	out := m.Sizes[len(m.Sizes)-1]
	logits := m.acts[len(m.Layers)][:m.n*out]
	if len(labels) != m.n {
		return 0, 0, fmt.Errorf("mlp: %d labels for a batch of %d", len(labels), m.n)
	}
	for i := 0; i < m.n; i++ {
		row := logits[i*out : (i+1)*out]
		y := int(labels[i])
		if y >= out {
			return 0, 0, fmt.Errorf("mlp: label %d of sample %d out of range 0..%d", y, i, out-1)
		}
		mx, arg := row[0], 0
		for j, v := range row {
			if v > mx {
				mx, arg = v, j
			}
		}
		if arg == y {
			correct++
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - mx))
		}
		lossSum += math.Log(sum) - float64(row[y]-mx)
	}
	return lossSum, correct, nil
}

// Backward computes the gradient of the mean cross-entropy of the last
// Forward's batch against labels, writing it into Grads, and returns that mean
// loss. It overwrites the logits. done, if not nil, is called with a tensor
// index (into Tensors()) as soon as that tensor's gradient is final, in the
// order the backward pass finishes them: the last layer's first. A DDP-style
// bucketer hooks in there to start communicating early.
func (m *Model) Backward(labels []uint8, done func(tensor int)) (float64, error) {
	n := m.n
	if n == 0 {
		return 0, fmt.Errorf("mlp: Backward before Forward")
	}
	if len(labels) != n {
		return 0, fmt.Errorf("mlp: %d labels for a batch of %d", len(labels), n)
	}
	L := len(m.Layers)
	out := m.Sizes[L]
	logits := m.acts[L][:n*out]
	d := m.deltas[L-1][:n*out]
	var lossSum float64
	inv := float32(1) / float32(n)
	for i := 0; i < n; i++ {
		y := int(labels[i])
		if y >= out {
			return 0, fmt.Errorf("mlp: label %d of sample %d out of range 0..%d", y, i, out-1)
		}
		row := logits[i*out : (i+1)*out]
		lossSum += softmaxCE(row, y)
		dr := d[i*out : (i+1)*out]
		for j, p := range row {
			dr[j] = p * inv
		}
		dr[y] -= inv
	}
	for l := L - 1; l >= 0; l-- {
		ly := m.Layers[l]
		dz := general(n, ly.Out, m.deltas[l])
		x := general(n, ly.In, m.acts[l])
		// GW = dzᵀ · x ; GB = column sums of dz
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, dz, x, 0, general(ly.Out, ly.In, ly.GW))
		clear(ly.GB)
		for i := 0; i < n; i++ {
			for j, v := range dz.Data[i*ly.Out : (i+1)*ly.Out] {
				ly.GB[j] += v
			}
		}
		if done != nil {
			done(2*l + 1)
			done(2 * l)
		}
		if l == 0 {
			break
		}
		// dx = dz · W, then through the ReLU of layer l-1 (its output is x).
		dx := general(n, ly.In, m.deltas[l-1])
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, dz, general(ly.Out, ly.In, ly.W), 0, dx)
		for i, a := range x.Data {
			if a <= 0 {
				dx.Data[i] = 0
			}
		}
	}
	return lossSum / float64(n), nil
}

// Step applies one SGD-with-momentum update from Grads, the way
// torch.optim.SGD does: v = momentum·v + g; p -= lr·v.
func (m *Model) Step(lr, momentum float32) {
	v, g, p := m.vel, m.Grads, m.Params
	for i := range p {
		vi := momentum*v[i] + g[i]
		v[i] = vi
		p[i] -= lr * vi
	}
}

// Hash returns the SHA-256 of the parameters' bytes (little-endian float32),
// the fingerprint ranks compare to prove their replicas are identical.
func (m *Model) Hash() [32]byte {
	return f32hash.Sum(m.Params)
}
