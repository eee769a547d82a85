// Package gpt is the byte-level decoder-only transformer language model that
// vccl's examples train data-parallel: token and position embeddings,
// pre-norm blocks of causal multi-head self-attention and a GELU MLP, a final
// layer norm and an output head over the 256 byte values, trained with
// softmax cross-entropy and AdamW. The forward and backward passes are
// written out by hand on gonum's float32 BLAS; parameters and gradients live
// in two flat buffers, so a gradient goes to the wire without copying and a
// parameter hash covers the whole model in one pass.
//
// Weights are stored the way PyTorch's nn.Linear stores them: Out×In,
// row-major, so a weight gradient is a picture with one row per output unit.
// The embeddings are Vocab×Dim and Ctx×Dim, the head Vocab×Dim.
//
// All buffers a step needs are allocated once by New; Forward, Backward and
// the optimizer do not allocate.
package gpt

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/vccl/vccl/examples/internal/f32hash"
)

// Config is the model's shape.
type Config struct {
	// Vocab is the number of token values (256 for bytes).
	Vocab int
	// Ctx is the context length: tokens per sequence.
	Ctx int
	// Dim is the width of the residual stream.
	Dim int
	// Heads is the number of attention heads; it must divide Dim.
	Heads int
	// Layers is the number of transformer blocks.
	Layers int
	// Hidden is the MLP's inner width (4·Dim in GPT-2).
	Hidden int
}

// DefaultConfig is the examples' model: 2 blocks of width 64, 4 heads,
// context 64, MLP 256, bytes in and out (about 120K parameters).
var DefaultConfig = Config{Vocab: 256, Ctx: 64, Dim: 64, Heads: 4, Layers: 2, Hidden: 256}

func (c Config) validate() error {
	switch {
	case c.Vocab < 2 || c.Vocab > 65536:
		return fmt.Errorf("gpt: vocab %d outside 2..65536", c.Vocab)
	case c.Ctx < 1:
		return fmt.Errorf("gpt: context %d, want >= 1", c.Ctx)
	case c.Dim < 1 || c.Heads < 1 || c.Dim%c.Heads != 0:
		return fmt.Errorf("gpt: width %d with %d heads: want positive, heads dividing the width", c.Dim, c.Heads)
	case c.Layers < 1:
		return fmt.Errorf("gpt: %d layers, want >= 1", c.Layers)
	case c.Hidden < 1:
		return fmt.Errorf("gpt: MLP width %d, want >= 1", c.Hidden)
	}
	return nil
}

// Tensor is one named parameter tensor with its gradient. Param and Grad are
// views into Model.Params and Model.Grads.
type Tensor struct {
	// Name is the tensor's name ("wte", "h0.attn.qkv.w", "lnf.g", …).
	Name string
	// Rows and Cols give its 2-D shape; a bias or norm is 1×N.
	Rows, Cols int
	// Decay reports whether AdamW's weight decay applies (2-D tensors:
	// the embeddings and the matrices of the linear maps).
	Decay bool
	// Param holds the values, Grad the gradient of the last Backward.
	Param, Grad []float32
}

// Indices of a block's tensors relative to the block's first tensor.
const (
	tLn1g = iota
	tLn1b
	tQkvW
	tQkvB
	tProjW
	tProjB
	tLn2g
	tLn2b
	tFcW
	tFcB
	tFc2W
	tFc2B
	tensorsPerBlock
)

// Model is the transformer with its parameters, gradients and the workspace
// for batches of up to MaxBatch sequences.
type Model struct {
	// Cfg is the model's shape.
	Cfg Config
	// Params and Grads are every parameter and gradient, flat, in the order
	// of Tensors().
	Params, Grads []float32
	// MaxBatch is the largest number of sequences Forward accepts.
	MaxBatch int

	tensors []Tensor
	ws      workspace
	n       int // sequences in the last Forward
}

// Tensor indices of the embeddings and the final layers.
const (
	tWte = 0
	tWpe = 1
)

func (m *Model) blockTensor(l, k int) *Tensor { return &m.tensors[2+l*tensorsPerBlock+k] }
func (m *Model) lnfG() *Tensor                { return &m.tensors[2+m.Cfg.Layers*tensorsPerBlock] }
func (m *Model) lnfB() *Tensor                { return &m.tensors[3+m.Cfg.Layers*tensorsPerBlock] }
func (m *Model) head() *Tensor                { return &m.tensors[4+m.Cfg.Layers*tensorsPerBlock] }

// workspace holds the activations the backward pass needs and its scratch.
type workspace struct {
	tokens   []uint16    // n·Ctx inputs
	targets  []uint16    // n·Ctx targets
	x        [][]float32 // x[l]: input of block l (x[0] the embeddings), x[L] the last block's output; N×Dim
	ln1, ln2 [][]float32 // normalised inputs of attention and MLP; N×Dim
	mean1    [][]float32 // layer-norm statistics, N each
	rstd1    [][]float32
	mean2    [][]float32
	rstd2    [][]float32
	qkv      [][]float32 // N×3Dim
	probs    [][]float32 // attention probabilities, n×Heads×Ctx×Ctx
	ao       [][]float32 // attention output before the projection, N×Dim
	xmid     [][]float32 // residual after attention, N×Dim
	u        [][]float32 // MLP pre-activation, N×Hidden
	th       [][]float32 // tanh inside the GELU, N×Hidden
	g        [][]float32 // GELU output, N×Hidden
	lnf      []float32   // N×Dim
	meanf    []float32
	rstdf    []float32
	logits   []float32 // N×Vocab; holds dLoss/dlogits after Backward
	// backward scratch
	dx, dtmp, dao []float32 // N×Dim
	dqkv          []float32 // N×3Dim
	dh            []float32 // N×Hidden
	drow          []float32 // Ctx
}

// New builds a model with GPT-2's initialisation — weights normal with
// standard deviation 0.02 (the projections into the residual stream
// 0.02/sqrt(2·Layers)), biases zero, norms one — drawn from a generator
// seeded with seed, so every rank that uses the same seed holds the same
// model. maxBatch (sequences) sizes the workspace.
func New(cfg Config, seed uint64, maxBatch int) (*Model, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if maxBatch < 1 {
		return nil, fmt.Errorf("gpt: max batch %d, want >= 1", maxBatch)
	}
	d, h, V, T, L := cfg.Dim, cfg.Hidden, cfg.Vocab, cfg.Ctx, cfg.Layers
	type spec struct {
		name       string
		rows, cols int
		decay      bool
	}
	specs := []spec{{"wte", V, d, true}, {"wpe", T, d, true}}
	for l := 0; l < L; l++ {
		p := fmt.Sprintf("h%d.", l)
		specs = append(specs,
			spec{p + "ln1.g", 1, d, false}, spec{p + "ln1.b", 1, d, false},
			spec{p + "attn.qkv.w", 3 * d, d, true}, spec{p + "attn.qkv.b", 1, 3 * d, false},
			spec{p + "attn.proj.w", d, d, true}, spec{p + "attn.proj.b", 1, d, false},
			spec{p + "ln2.g", 1, d, false}, spec{p + "ln2.b", 1, d, false},
			spec{p + "mlp.fc.w", h, d, true}, spec{p + "mlp.fc.b", 1, h, false},
			spec{p + "mlp.proj.w", d, h, true}, spec{p + "mlp.proj.b", 1, d, false})
	}
	specs = append(specs, spec{"lnf.g", 1, d, false}, spec{"lnf.b", 1, d, false}, spec{"head.w", V, d, true})
	total := 0
	for _, s := range specs {
		total += s.rows * s.cols
	}
	m := &Model{Cfg: cfg, Params: make([]float32, total), Grads: make([]float32, total), MaxBatch: maxBatch}
	off := 0
	for _, s := range specs {
		k := s.rows * s.cols
		m.tensors = append(m.tensors, Tensor{Name: s.name, Rows: s.rows, Cols: s.cols, Decay: s.decay,
			Param: m.Params[off : off+k : off+k], Grad: m.Grads[off : off+k : off+k]})
		off += k
	}
	rng := rand.New(rand.NewPCG(seed, 0x766363_6c67_7074))
	normal := func(p []float32, std float64) {
		for i := range p {
			p[i] = float32(rng.NormFloat64() * std)
		}
	}
	const std = 0.02
	resid := std / math.Sqrt(2*float64(L))
	normal(m.tensors[tWte].Param, std)
	normal(m.tensors[tWpe].Param, std)
	for l := 0; l < L; l++ {
		fill(m.blockTensor(l, tLn1g).Param, 1)
		fill(m.blockTensor(l, tLn2g).Param, 1)
		normal(m.blockTensor(l, tQkvW).Param, std)
		normal(m.blockTensor(l, tProjW).Param, resid)
		normal(m.blockTensor(l, tFcW).Param, std)
		normal(m.blockTensor(l, tFc2W).Param, resid)
	}
	fill(m.lnfG().Param, 1)
	normal(m.head().Param, std)

	N := maxBatch * T
	mk := func(k int) [][]float32 {
		s := make([][]float32, L)
		for i := range s {
			s[i] = make([]float32, k)
		}
		return s
	}
	w := &m.ws
	w.tokens, w.targets = make([]uint16, N), make([]uint16, N)
	w.x = make([][]float32, L+1)
	for i := range w.x {
		w.x[i] = make([]float32, N*d)
	}
	w.ln1, w.ln2, w.ao, w.xmid = mk(N*d), mk(N*d), mk(N*d), mk(N*d)
	w.mean1, w.rstd1, w.mean2, w.rstd2 = mk(N), mk(N), mk(N), mk(N)
	w.qkv = mk(N * 3 * d)
	w.probs = mk(maxBatch * cfg.Heads * T * T)
	w.u, w.th, w.g = mk(N*h), mk(N*h), mk(N*h)
	w.lnf, w.meanf, w.rstdf = make([]float32, N*d), make([]float32, N), make([]float32, N)
	w.logits = make([]float32, N*V)
	w.dx, w.dtmp, w.dao = make([]float32, N*d), make([]float32, N*d), make([]float32, N*d)
	w.dqkv = make([]float32, N*3*d)
	w.dh = make([]float32, N*h)
	w.drow = make([]float32, T)
	return m, nil
}

func fill(p []float32, v float32) {
	for i := range p {
		p[i] = v
	}
}

// NumParams returns the number of parameters.
func (m *Model) NumParams() int { return len(m.Params) }

// Tensors returns the model's tensors in forward order: wte, wpe, each
// block's ln1.g, ln1.b, attn.qkv.w, attn.qkv.b, attn.proj.w, attn.proj.b,
// ln2.g, ln2.b, mlp.fc.w, mlp.fc.b, mlp.proj.w, mlp.proj.b, then lnf.g,
// lnf.b, head.w. The slice is the model's own; do not modify it.
func (m *Model) Tensors() []Tensor { return m.tensors }

// Tokens returns the input and target buffers for a batch of n sequences
// (n·Ctx values each, sequence after sequence), for the caller to fill
// before Forward: targets[i] is the token that follows tokens[i]. It panics
// if n is outside 1..MaxBatch (a programming error).
func (m *Model) Tokens(n int) (tokens, targets []uint16) {
	m.checkBatch(n)
	k := n * m.Cfg.Ctx
	return m.ws.tokens[:k], m.ws.targets[:k]
}

func (m *Model) checkBatch(n int) {
	if n < 1 || n > m.MaxBatch {
		panic(fmt.Sprintf("gpt: batch of %d sequences outside 1..%d", n, m.MaxBatch))
	}
}

func general(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// linear computes y = x·Wᵀ + b (+ y's old contents when accumulate), for x
// N×in, W out×in and y N×out.
func linear(y, x, w, b []float32, n, in, out int, accumulate bool) {
	Y := general(n, out, y)
	if !accumulate {
		for i := 0; i < n; i++ {
			copy(Y.Data[i*out:(i+1)*out], b)
		}
	} else {
		for i := 0; i < n; i++ {
			r := Y.Data[i*out : (i+1)*out]
			for j, v := range b {
				r[j] += v
			}
		}
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, general(n, in, x), general(out, in, w), 1, Y)
}

// linearBackward writes gW = dyᵀ·x and gb = column sums of dy, and, when dx
// is not nil, dx = dy·W.
func linearBackward(dx, gW, gb, dy, x, w []float32, n, in, out int) {
	DY := general(n, out, dy)
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, DY, general(n, in, x), 0, general(out, in, gW))
	clear(gb)
	for i := 0; i < n; i++ {
		for j, v := range DY.Data[i*out : (i+1)*out] {
			gb[j] += v
		}
	}
	if dx != nil {
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, DY, general(out, in, w), 0, general(n, in, dx))
	}
}

const lnEps = 1e-5

// layerNorm normalises each row of x (n×d) into y with gain g and bias b,
// keeping the mean and 1/std of each row.
func layerNorm(y, mean, rstd, x, g, b []float32, n, d int) {
	for i := 0; i < n; i++ {
		r := x[i*d : (i+1)*d]
		var s float64
		for _, v := range r {
			s += float64(v)
		}
		mu := s / float64(d)
		var ss float64
		for _, v := range r {
			dv := float64(v) - mu
			ss += dv * dv
		}
		rs := 1 / math.Sqrt(ss/float64(d)+lnEps)
		mean[i], rstd[i] = float32(mu), float32(rs)
		mf, rf := float32(mu), float32(rs)
		o := y[i*d : (i+1)*d]
		for j, v := range r {
			o[j] = (v-mf)*rf*g[j] + b[j]
		}
	}
}

// layerNormBackward adds dLoss/dx to dx and writes the gain and bias
// gradients, from dy and the forward's x, mean and rstd.
func layerNormBackward(dx, gg, gb, dy, x, mean, rstd, g []float32, n, d int) {
	clear(gg)
	clear(gb)
	for i := 0; i < n; i++ {
		r, dr, o := x[i*d:(i+1)*d], dy[i*d:(i+1)*d], dx[i*d:(i+1)*d]
		mf, rf := mean[i], rstd[i]
		var sumD, sumDX float32
		for j, v := range r {
			xh := (v - mf) * rf
			dxh := dr[j] * g[j]
			sumD += dxh
			sumDX += dxh * xh
			gg[j] += dr[j] * xh
			gb[j] += dr[j]
		}
		inv := 1 / float32(d)
		sumD *= inv
		sumDX *= inv
		for j, v := range r {
			xh := (v - mf) * rf
			o[j] += rf * (dr[j]*g[j] - sumD - xh*sumDX)
		}
	}
}

// GELU, tanh approximation (GPT-2's).
const (
	geluC = 0.7978845608028654 // sqrt(2/π)
	geluA = 0.044715
)

// attention runs causal multi-head self-attention for n sequences: qkv is
// N×3d (queries, keys, values side by side), out N×d, probs the softmax
// weights n×H×T×T.
func attention(out, probs, qkv []float32, n, T, d, H int) {
	hd := d / H
	scale := float32(1 / math.Sqrt(float64(hd)))
	d3 := 3 * d
	for b := 0; b < n; b++ {
		base := b * T
		for h := 0; h < H; h++ {
			P := probs[(b*H+h)*T*T : (b*H+h+1)*T*T]
			for i := 0; i < T; i++ {
				q := qkv[(base+i)*d3+h*hd : (base+i)*d3+h*hd+hd]
				row := P[i*T : (i+1)*T]
				mx := float32(math.Inf(-1))
				for j := 0; j <= i; j++ {
					k := qkv[(base+j)*d3+d+h*hd : (base+j)*d3+d+h*hd+hd]
					var s float32
					for c, qv := range q {
						s += qv * k[c]
					}
					s *= scale
					row[j] = s
					mx = max(mx, s)
				}
				var sum float32
				for j := 0; j <= i; j++ {
					e := float32(math.Exp(float64(row[j] - mx)))
					row[j] = e
					sum += e
				}
				inv := 1 / sum
				o := out[(base+i)*d+h*hd : (base+i)*d+h*hd+hd]
				clear(o)
				for j := 0; j <= i; j++ {
					p := row[j] * inv
					row[j] = p
					v := qkv[(base+j)*d3+2*d+h*hd : (base+j)*d3+2*d+h*hd+hd]
					for c, vv := range v {
						o[c] += p * vv
					}
				}
				clear(row[i+1:])
			}
		}
	}
}

// attentionBackward writes dqkv (N×3d) from dout (N×d) and the forward's
// qkv and probs; drow is scratch of T values.
func attentionBackward(dqkv, dout, qkv, probs, drow []float32, n, T, d, H int) {
	hd := d / H
	scale := float32(1 / math.Sqrt(float64(hd)))
	d3 := 3 * d
	clear(dqkv[:n*T*d3])
	for b := 0; b < n; b++ {
		base := b * T
		for h := 0; h < H; h++ {
			P := probs[(b*H+h)*T*T : (b*H+h+1)*T*T]
			for i := 0; i < T; i++ {
				row := P[i*T : i*T+i+1]
				do := dout[(base+i)*d+h*hd : (base+i)*d+h*hd+hd]
				dp := drow[:i+1]
				var dot float32
				for j, p := range row {
					vo := (base+j)*d3 + 2*d + h*hd
					v, dv := qkv[vo:vo+hd], dqkv[vo:vo+hd]
					var s float32
					for c, g := range do {
						s += g * v[c]
						dv[c] += p * g
					}
					dp[j] = s
					dot += p * s
				}
				qo := (base+i)*d3 + h*hd
				q, dq := qkv[qo:qo+hd], dqkv[qo:qo+hd]
				for j, p := range row {
					ds := p * (dp[j] - dot) * scale
					if ds == 0 {
						continue
					}
					ko := (base+j)*d3 + d + h*hd
					k, dk := qkv[ko:ko+hd], dqkv[ko:ko+hd]
					for c := range dq {
						dq[c] += ds * k[c]
						dk[c] += ds * q[c]
					}
				}
			}
		}
	}
}

// Forward runs the batch of n sequences written into Tokens(n) and returns
// the logits, n·Ctx×Vocab values (a view into the workspace, valid until the
// next Forward or Backward). It panics if a token is out of range (a
// programming error; Check reports it as an error).
func (m *Model) Forward(n int) []float32 {
	m.checkBatch(n)
	m.n = n
	c := m.Cfg
	T, d, h, V, L := c.Ctx, c.Dim, c.Hidden, c.Vocab, c.Layers
	N := n * T
	w := &m.ws
	wte, wpe := m.tensors[tWte].Param, m.tensors[tWpe].Param
	x0 := w.x[0]
	for i, tok := range w.tokens[:N] {
		t := i % T
		e, p, o := wte[int(tok)*d:int(tok)*d+d], wpe[t*d:t*d+d], x0[i*d:i*d+d]
		for j := range o {
			o[j] = e[j] + p[j]
		}
	}
	for l := 0; l < L; l++ {
		P := func(k int) []float32 { return m.blockTensor(l, k).Param }
		xin, xout := w.x[l][:N*d], w.x[l+1][:N*d]
		layerNorm(w.ln1[l], w.mean1[l], w.rstd1[l], xin, P(tLn1g), P(tLn1b), N, d)
		linear(w.qkv[l], w.ln1[l], P(tQkvW), P(tQkvB), N, d, 3*d, false)
		attention(w.ao[l], w.probs[l], w.qkv[l], n, T, d, c.Heads)
		xmid := w.xmid[l][:N*d]
		copy(xmid, xin)
		linear(xmid, w.ao[l], P(tProjW), P(tProjB), N, d, d, true)
		layerNorm(w.ln2[l], w.mean2[l], w.rstd2[l], xmid, P(tLn2g), P(tLn2b), N, d)
		linear(w.u[l], w.ln2[l], P(tFcW), P(tFcB), N, d, h, false)
		u, th, g := w.u[l][:N*h], w.th[l][:N*h], w.g[l][:N*h]
		for i, v := range u {
			t := float32(math.Tanh(float64(geluC * (v + geluA*v*v*v))))
			th[i] = t
			g[i] = 0.5 * v * (1 + t)
		}
		copy(xout, xmid)
		linear(xout, g, P(tFc2W), P(tFc2B), N, h, d, true)
	}
	layerNorm(w.lnf, w.meanf, w.rstdf, w.x[L][:N*d], m.lnfG().Param, m.lnfB().Param, N, d)
	logits := w.logits[:N*V]
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, general(N, d, w.lnf), general(V, d, m.head().Param), 0, general(N, V, logits))
	return logits
}

// Check reports an error if a token or target of the batch of n sequences is
// out of the vocabulary.
func (m *Model) Check(n int) error {
	tok, tgt := m.Tokens(n)
	for i := range tok {
		if int(tok[i]) >= m.Cfg.Vocab || int(tgt[i]) >= m.Cfg.Vocab {
			return fmt.Errorf("gpt: token %d of the batch (%d → %d) outside the vocabulary of %d", i, tok[i], tgt[i], m.Cfg.Vocab)
		}
	}
	return nil
}

// Loss returns the summed cross-entropy (nats) of the last Forward's logits
// against the targets, over its n·Ctx tokens, without changing anything.
func (m *Model) Loss() float64 {
	V := m.Cfg.Vocab
	N := m.n * m.Cfg.Ctx
	var sum float64
	for i, y := range m.ws.targets[:N] {
		row := m.ws.logits[i*V : (i+1)*V]
		mx := row[0]
		for _, v := range row[1:] {
			mx = max(mx, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v - mx))
		}
		sum += math.Log(s) - float64(row[y]-mx)
	}
	return sum
}

// Backward computes the gradient of the mean cross-entropy of the last
// Forward's batch, writing it into Grads, and returns that mean loss. It
// overwrites the logits. done, if not nil, is called with a tensor index
// (into Tensors()) as soon as that tensor's gradient is final, in the order
// the backward pass finishes them: head.w first, wte last. A DDP-style
// bucketer hooks in there to start communicating early.
func (m *Model) Backward(done func(tensor int)) (float64, error) {
	n := m.n
	if n == 0 {
		return 0, fmt.Errorf("gpt: Backward before Forward")
	}
	c := m.Cfg
	T, d, h, V, L := c.Ctx, c.Dim, c.Hidden, c.Vocab, c.Layers
	N := n * T
	w := &m.ws
	mark := func(i int) {
		if done != nil {
			done(i)
		}
	}
	// dlogits = (softmax − onehot)/N, in place.
	var lossSum float64
	inv := 1 / float32(N)
	for i, y := range w.targets[:N] {
		row := w.logits[i*V : (i+1)*V]
		mx, ly := row[0], row[y]
		for _, v := range row[1:] {
			mx = max(mx, v)
		}
		var s float64
		for j, v := range row {
			e := math.Exp(float64(v - mx))
			row[j] = float32(e)
			s += e
		}
		lossSum += math.Log(s) - float64(ly-mx)
		is := float32(1 / s)
		for j := range row {
			row[j] *= is * inv
		}
		row[y] -= inv
	}
	dlogits := general(N, V, w.logits)
	head := m.head()
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, dlogits, general(N, d, w.lnf), 0, general(V, d, head.Grad))
	dln := w.dtmp[:N*d]
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, dlogits, general(V, d, head.Param), 0, general(N, d, dln))
	mark(len(m.tensors) - 1)
	dx := w.dx[:N*d]
	clear(dx)
	layerNormBackward(dx, m.lnfG().Grad, m.lnfB().Grad, dln, w.x[L], w.meanf, w.rstdf, m.lnfG().Param, N, d)
	mark(len(m.tensors) - 3)
	mark(len(m.tensors) - 2)
	for l := L - 1; l >= 0; l-- {
		first := 2 + l*tensorsPerBlock
		P := func(k int) []float32 { return m.tensors[first+k].Param }
		G := func(k int) []float32 { return m.tensors[first+k].Grad }
		// xout = xmid + gelu(u)·W2ᵀ + b2; dx is dLoss/dxout.
		dh := w.dh[:N*h]
		linearBackward(dh, G(tFc2W), G(tFc2B), dx, w.g[l], P(tFc2W), N, h, d)
		mark(first + tFc2W)
		mark(first + tFc2B)
		u, th := w.u[l][:N*h], w.th[l][:N*h]
		for i, v := range u {
			t := th[i]
			dt := geluC * (1 + 3*geluA*v*v) * (1 - t*t)
			dh[i] *= 0.5*(1+t) + 0.5*v*dt
		}
		linearBackward(dln, G(tFcW), G(tFcB), dh, w.ln2[l], P(tFcW), N, d, h)
		mark(first + tFcW)
		mark(first + tFcB)
		layerNormBackward(dx, G(tLn2g), G(tLn2b), dln, w.xmid[l], w.mean2[l], w.rstd2[l], P(tLn2g), N, d)
		mark(first + tLn2g)
		mark(first + tLn2b)
		// xmid = xin + ao·Wpᵀ + bp; dx is now dLoss/dxmid.
		dao := w.dao[:N*d]
		linearBackward(dao, G(tProjW), G(tProjB), dx, w.ao[l], P(tProjW), N, d, d)
		mark(first + tProjW)
		mark(first + tProjB)
		attentionBackward(w.dqkv, dao, w.qkv[l], w.probs[l], w.drow, n, T, d, c.Heads)
		linearBackward(dln, G(tQkvW), G(tQkvB), w.dqkv[:N*3*d], w.ln1[l], P(tQkvW), N, d, 3*d)
		mark(first + tQkvW)
		mark(first + tQkvB)
		layerNormBackward(dx, G(tLn1g), G(tLn1b), dln, w.x[l], w.mean1[l], w.rstd1[l], P(tLn1g), N, d)
		mark(first + tLn1g)
		mark(first + tLn1b)
	}
	gte, gpe := m.tensors[tWte].Grad, m.tensors[tWpe].Grad
	clear(gte)
	clear(gpe)
	for i, tok := range w.tokens[:N] {
		t := i % T
		e, p, g := gte[int(tok)*d:int(tok)*d+d], gpe[t*d:t*d+d], dx[i*d:i*d+d]
		for j, v := range g {
			e[j] += v
			p[j] += v
		}
	}
	mark(tWpe)
	mark(tWte)
	return lossSum / float64(N), nil
}

// Hash returns the SHA-256 of the parameters' bytes (little-endian float32),
// the fingerprint ranks compare to prove their replicas are identical.
func (m *Model) Hash() [32]byte {
	return f32hash.Sum(m.Params)
}
