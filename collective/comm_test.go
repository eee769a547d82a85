package collective

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
	"github.com/vccl/vccl/worker"
)

// fakeCodecs stands in for gradcodec in the in-memory tests: "raw" is exact,
// every other codec is ringtest's deterministic int8 quantizer.
func fakeCodecs(opts gradcodec.Options, ef bool, rawBelow int) (ring.Codec, error) {
	if opts.Codec == "raw" {
		return &ringtest.RawCodec{}, nil
	}
	return &ringtest.QuantCodec{}, nil
}

// memWorld returns size Comms over an in-memory ring network.
func memWorld(t *testing.T, size int, mod func(*Config)) ([]*Comm, *ringtest.Network) {
	t.Helper()
	return memWorldWith(t, size, mod, nil, fakeCodecs)
}

// memWorldRing is memWorld with ringMod applied to every rank's ring.
func memWorldRing(t *testing.T, size int, mod func(*Config), ringMod func(*ring.Ring)) ([]*Comm, *ringtest.Network) {
	t.Helper()
	return memWorldWith(t, size, mod, ringMod, fakeCodecs)
}

// memWorldWith is memWorldRing with the codecs newCodec opens.
func memWorldWith(t *testing.T, size int, mod func(*Config), ringMod func(*ring.Ring),
	newCodec func(opts gradcodec.Options, errorFeedback bool, rawBelow int) (ring.Codec, error)) ([]*Comm, *ringtest.Network) {
	t.Helper()
	net := ringtest.NewNetwork(size)
	comms := make([]*Comm, size)
	for r := range comms {
		cfg := DefaultConfig()
		cfg.Rank, cfg.WorldSize, cfg.Secret = r, size, []byte("test")
		if mod != nil {
			mod(&cfg)
		}
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		rg := net.Ring(r)
		rg.Timeout = cfg.Timeout
		if ringMod != nil {
			ringMod(rg)
		}
		comms[r] = newComm(cfg, runtime{rank: r, size: size, eng: ringEngine{r: rg}, newCodec: newCodec})
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	return comms, net
}

// each runs f on every rank concurrently and returns the errors by rank.
func each(comms []*Comm, f func(r int, c *Comm) error) []error {
	return testenv.Parallel(len(comms), func(r int) error { return f(r, comms[r]) })
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// singleRank returns a Comm of one rank with the default configuration,
// closed when the test ends.
func singleRank(t testing.TB) *Comm {
	t.Helper()
	c, err := Init(context.Background(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sameOnAllRanks fails the test unless every rank's result is
// bit-identical to rank 0's.
func sameOnAllRanks(t testing.TB, what string, outs [][]float32) {
	t.Helper()
	for r := 1; r < len(outs); r++ {
		if hashOf(outs[r]) != hashOf(outs[0]) {
			t.Fatalf("%s: rank %d differs from rank 0", what, r)
		}
	}
}

func hashOf(x []float32) uint64 {
	h := fnv.New64a()
	b := make([]byte, 4)
	for _, v := range x {
		u := math.Float32bits(v)
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		h.Write(b)
	}
	return h.Sum64()
}

// rankData is rank r's deterministic input.
func rankData(seed int64, r, n int) []float32 {
	rng := rand.New(rand.NewSource(seed*1000 + int64(r)))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// rankSmooth is rank r's deterministic gradient-like input for the video
// codecs: a rank-2 rows×cols matrix plus 5% noise (i.i.d. noise alone is
// incompressible; gradients of linear layers are close to low rank).
func rankSmooth(seed int64, r, rows, cols int) []float32 {
	rng := rand.New(rand.NewSource(seed*1000 + int64(r)))
	u := [2][]float64{make([]float64, rows), make([]float64, rows)}
	v := [2][]float64{make([]float64, cols), make([]float64, cols)}
	for k := 0; k < 2; k++ {
		fu, fv, pu, pv := rng.Float64()*0.1, rng.Float64()*0.1, rng.Float64()*6, rng.Float64()*6
		for i := range u[k] {
			u[k][i] = math.Sin(fu*float64(i) + pu)
		}
		for j := range v[k] {
			v[k][j] = math.Cos(fv*float64(j) + pv)
		}
	}
	x := make([]float32, rows*cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			x[i*cols+j] = float32(u[0][i]*v[0][j] + 0.5*u[1][i]*v[1][j] + 0.05*rng.NormFloat64())
		}
	}
	return x
}

func exactSumOf(size int, data func(r int) []float32, average bool) []float64 {
	var s []float64
	for r := 0; r < size; r++ {
		x := data(r)
		if s == nil {
			s = make([]float64, len(x))
		}
		for i, v := range x {
			s[i] += float64(v)
		}
	}
	if average {
		for i := range s {
			s[i] /= float64(size)
		}
	}
	return s
}

func exactSum(seed int64, size, n int, average bool) []float64 {
	s := make([]float64, n)
	for r := 0; r < size; r++ {
		for i, v := range rankData(seed, r, n) {
			s[i] += float64(v)
		}
	}
	if average {
		for i := range s {
			s[i] /= float64(size)
		}
	}
	return s
}

func TestConfigValidateNamesField(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"WorldSize", func(c *Config) { c.WorldSize = 0 }},
		{"Rank", func(c *Config) { c.Rank = 1 }},
		{"Secret", func(c *Config) { c.WorldSize, c.Rank = 2, 1 }},
		{"BindPort", func(c *Config) { c.BindPort = 70000 }},
		{"PeerTimeout", func(c *Config) { c.PeerTimeout = -time.Second }},
		{"JoinTimeout", func(c *Config) { c.JoinTimeout = -time.Second }},
		{"Timeout", func(c *Config) { c.Timeout = -time.Second }},
		{"Codec", func(c *Config) { c.Codec = "" }},
		{"Codec", func(c *Config) { c.Codec = "vp9" }},
		{"Backend", func(c *Config) { c.Backend = "cuda" }},
		{"BitsPerValue", func(c *Config) { c.BitsPerValue = 0 }},
		{"BitsPerValue", func(c *Config) { c.BitsPerValue = math.NaN() }},
		{"WarmupSteps", func(c *Config) { c.WarmupSteps = -1 }},
		{"RawBelow", func(c *Config) { c.RawBelow = -1 }},
		{"BucketBytes", func(c *Config) { c.BucketBytes = 0 }},
		{"CodecThreads", func(c *Config) { c.CodecThreads = -1 }},
		{"CodecThreads", func(c *Config) { c.CodecThreads = 65 }},
		{"MaxEncoders", func(c *Config) { c.MaxEncoders = 0 }},
	}
	for _, tc := range cases {
		cfg := DefaultConfig()
		tc.mod(&cfg)
		err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want an error naming Config.%s", tc.field, err, tc.field)
		}
		if _, err := Init(context.Background(), cfg); err == nil {
			t.Errorf("%s: Init accepted a bad config", tc.field)
		}
	}
	d := DefaultConfig()
	if d.Codec != DefaultCodec || (gradcodec.Registered("h264") && d.Codec != gradcodec.DefaultOptions().Codec) || d.Backend != gradcodec.DefaultOptions().Backend || d.BitsPerValue != gradcodec.DefaultOptions().BitsPerValue {
		t.Fatalf("DefaultConfig codec %s/%s/%v, gradcodec's default %+v", d.Codec, d.Backend, d.BitsPerValue, gradcodec.DefaultOptions())
	}
	if err := d.validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
	if d.Timeout != 30*time.Minute || !d.ErrorFeedback || d.WarmupSteps != DefaultWarmupSteps || d.RawBelow != 4096 || d.BucketBytes != 25<<20 || d.BitsPerValue != 1.4 {
		t.Fatalf("DefaultConfig = %+v", d)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(worker.EnvRank, "2")
	t.Setenv(worker.EnvWorldSize, "4")
	t.Setenv(worker.EnvJoin, "127.0.0.1:7000, 127.0.0.1:7001")
	t.Setenv(worker.EnvSecret, "00ff10")
	t.Setenv(worker.EnvCodec, strings.ToUpper(lossyCodec))
	t.Setenv(worker.EnvBackend, "software")
	t.Setenv(worker.EnvBPV, "2.5")
	t.Setenv(worker.EnvBucketBytes, "1048576")
	t.Setenv(worker.EnvPeerTimeout, "3s")
	t.Setenv(EnvWarmupSteps, "0")
	t.Setenv(EnvRawBelow, "100")
	t.Setenv(EnvErrorFeedback, "false")
	t.Setenv(EnvTimeout, "90s")
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Rank, want.WorldSize = 2, 4
	if c.Rank != 2 || c.WorldSize != 4 || len(c.Join) != 2 || c.Join[1] != "127.0.0.1:7001" ||
		string(c.Secret) != "\x00\xff\x10" || c.Codec != lossyCodec || c.Backend != "software" || c.BitsPerValue != 2.5 ||
		c.BucketBytes != 1<<20 || c.PeerTimeout != 3*time.Second || c.WarmupSteps != 0 || c.RawBelow != 100 || c.ErrorFeedback ||
		c.Timeout != 90*time.Second {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}
	for val, want := range map[string]time.Duration{"2.5": 2500 * time.Millisecond, "0": 0, "30m": 30 * time.Minute} {
		t.Setenv(EnvTimeout, val)
		if c, err := ConfigFromEnv(); err != nil || c.Timeout != want {
			t.Fatalf("%s=%s: Timeout %v, %v; want %v", EnvTimeout, val, c.Timeout, err, want)
		}
	}
	t.Setenv(EnvTimeout, "90s")

	for _, bad := range []struct{ name, val string }{
		{worker.EnvRank, "two"},
		{worker.EnvBPV, "x"},
		{worker.EnvSecret, "zz"},
		{worker.EnvPeerTimeout, "10"},
		{EnvErrorFeedback, "maybe"},
		{EnvTimeout, "soon"},
		{EnvTimeout, "-5s"},
		{worker.EnvCodec, "vp9"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			t.Setenv(bad.name, bad.val)
			_, err := ConfigFromEnv()
			name := bad.name
			if bad.name == worker.EnvCodec {
				name = "Config.Codec"
			}
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s=%q: got %v, want an error naming %s", bad.name, bad.val, err, name)
			}
		})
	}
	t.Run("missing rank", func(t *testing.T) {
		t.Setenv(worker.EnvRank, "")
		if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), worker.EnvRank) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestWorldSizeOne(t *testing.T) {
	ctx := context.Background()
	c := singleRank(t)
	x := []float32{1, 2, 3}
	st, err := c.AllReduce(ctx, x, WithAverage())
	if err != nil || x[0] != 1 || x[2] != 3 || st.Values != 3 || st.Calls != 1 {
		t.Fatalf("allreduce: %v %v %+v", err, x, st)
	}
	if err := c.Broadcast(ctx, x, 0); err != nil {
		t.Fatal(err)
	}
	parts, err := c.AllGather(ctx, []byte("me"))
	if err != nil || len(parts) != 1 || string(parts[0]) != "me" {
		t.Fatalf("allgather: %v %q", err, parts)
	}
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats(); got.Calls != 1 || got.Values != 3 {
		t.Fatalf("cumulative stats %+v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = c.AllReduce(ctx, x)
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "collective: rank 0") {
		t.Fatalf("after Close: %v", err)
	}
}

func TestBadArgumentAborts(t *testing.T) {
	ctx := context.Background()
	c := singleRank(t)
	_, err := c.AllReduce(ctx, make([]float32, 10), WithShape(3, 3))
	if !errors.Is(err, ErrInvalidArgument) || !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), "covers 9 values but data has 10") {
		t.Fatalf("got %v", err)
	}
	// The Comm is aborted: later calls fail at once with the first error.
	err = c.Barrier(ctx)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrShapeMismatch) {
		t.Fatalf("after abort: %v", err)
	}
	for _, bad := range []Option{WithCodec("vp9"), WithBackend("x"), WithBitsPerValue(-1)} {
		c2 := singleRank(t)
		if _, err := c2.AllReduce(ctx, make([]float32, 4), bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("got %v", err)
		}
		c2.Close()
	}
	c3 := singleRank(t)
	if err := c3.Broadcast(ctx, nil, 1); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "root 1") {
		t.Fatalf("bad root: %v", err)
	}
}

func TestAllReduceInMemory(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms, _ := memWorld(t, size, func(c *Config) { c.WarmupSteps = 1; c.Codec = lossyCodec })
	for _, n := range []int{0, 1, 3, 4097, 10000} {
		for _, average := range []bool{false, true} {
			for step := 0; step < 2; step++ { // step 0 is the warm-up (raw)
				seed := int64(n*10 + step)
				outs := make([][]float32, size)
				sts := make([]Stats, size)
				noErrors(t, each(comms, func(r int, c *Comm) error {
					x := rankData(seed, r, n)
					opts := []Option{WithStream(fmt.Sprintf("s%d-%v", n, average))}
					if average {
						opts = append(opts, WithAverage())
					}
					st, err := c.AllReduce(ctx, x, opts...)
					outs[r], sts[r] = x, st
					return err
				}))
				want := exactSum(seed, size, n, average)
				sameOnAllRanks(t, fmt.Sprintf("n=%d step %d", n, step), outs)
				raw := step == 0 || n < DefaultRawBelow
				wantCodec := lossyCodec
				if raw {
					wantCodec = "raw"
				}
				if sts[0].Codec != wantCodec {
					t.Fatalf("n=%d step %d: codec %q, want %q", n, step, sts[0].Codec, wantCodec)
				}
				e := metric.NMSE(outs[0], want)
				if raw && e > 1e-12 || !raw && e > 1e-3 {
					t.Fatalf("n=%d step %d codec %s: NMSE %g", n, step, sts[0].Codec, e)
				}
				if n > 0 && (sts[0].WireBytes == 0 || sts[0].RawBytes == 0) {
					t.Fatalf("n=%d: stats %+v", n, sts[0])
				}
			}
		}
	}
}

func TestMixedLayoutSplitsRawAndCoded(t *testing.T) {
	ctx := context.Background()
	const size = 3
	comms, _ := memWorld(t, size, func(c *Config) { c.WarmupSteps = 0; c.Codec = "int8"; c.RawBelow = 100 })
	layout := []gradcodec.Shape{{Rows: 64, Cols: 64}, {Rows: 1, Cols: 64}, {Rows: 8, Cols: 8}, {Rows: 32, Cols: 16}}
	n := 0
	for _, s := range layout {
		n += s.Len()
	}
	outs := make([][]float32, size)
	sts := make([]Stats, size)
	noErrors(t, each(comms, func(r int, c *Comm) error {
		x := rankData(7, r, n)
		st, err := c.AllReduce(ctx, x, WithLayout(layout))
		outs[r], sts[r] = x, st
		return err
	}))
	want := exactSum(7, size, n, false)
	// The bias (1×64) and the 8×8 tensor (64 < RawBelow) went raw: exact.
	off := 64 * 64
	for i := off; i < off+64+64; i++ {
		if math.Abs(float64(outs[0][i])-want[i]) > 1e-5 {
			t.Fatalf("raw part value %d: %v, want %v", i, outs[0][i], want[i])
		}
	}
	if e := metric.NMSE(outs[0], want); e == 0 || e > 1e-3 {
		t.Fatalf("NMSE %g: the coded part should be lossy but close", e)
	}
	sameOnAllRanks(t, "mixed layout", outs)
	if sts[0].Codec != "int8" || sts[0].Values != int64(n) {
		t.Fatalf("stats %+v", sts[0])
	}
}

func TestAsyncRunsInCallOrder(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms, _ := memWorld(t, size, func(c *Config) { c.Codec = "raw" })
	const k = 6
	outs := make([][][]float32, size)
	noErrors(t, each(comms, func(r int, c *Comm) error {
		hs := make([]*Handle, k)
		outs[r] = make([][]float32, k)
		for i := range hs {
			outs[r][i] = rankData(int64(i), r, 100+i)
			hs[i] = c.AllReduceAsync(ctx, outs[r][i])
		}
		for i := k - 1; i >= 0; i-- { // wait in any order
			if _, err := hs[i].Wait(); err != nil {
				return err
			}
		}
		return nil
	}))
	for i := 0; i < k; i++ {
		if e := metric.NMSE(outs[0][i], exactSum(int64(i), size, 100+i, false)); e > 1e-12 {
			t.Fatalf("call %d: NMSE %g", i, e)
		}
	}
	if got := comms[0].Stats(); got.Calls != k {
		t.Fatalf("cumulative calls %d, want %d", got.Calls, k)
	}
}

func TestBroadcastAllGatherBarrierInMemory(t *testing.T) {
	ctx := context.Background()
	const size = 5
	comms, _ := memWorld(t, size, nil)
	outs := make([][]float32, size)
	gathered := make([][][]byte, size)
	noErrors(t, each(comms, func(r int, c *Comm) error {
		x := []float32{float32(r), float32(r) * 2, -1}
		if err := c.Broadcast(ctx, x, 3); err != nil {
			return err
		}
		outs[r] = x
		g, err := c.AllGather(ctx, []byte(strings.Repeat("x", r)))
		gathered[r] = g
		if err != nil {
			return err
		}
		return c.Barrier(ctx)
	}))
	for r := 0; r < size; r++ {
		if outs[r][0] != 3 || outs[r][1] != 6 || outs[r][2] != -1 {
			t.Fatalf("rank %d broadcast got %v", r, outs[r])
		}
		for q := 0; q < size; q++ {
			if len(gathered[r][q]) != q {
				t.Fatalf("rank %d allgather part %d = %q", r, q, gathered[r][q])
			}
		}
	}
}

func TestErrorsNameTheRankAndAbort(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms, _ := memWorld(t, size, func(c *Config) { c.WarmupSteps = 0 })
	errs := each(comms, func(r int, c *Comm) error {
		x := rankData(1, r, 9000)
		if r == 2 {
			x[17] = float32(math.NaN())
		}
		_, err := c.AllReduce(ctx, x)
		return err
	})
	for r, err := range errs {
		if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), fmt.Sprintf("collective: rank %d: op 1", r)) ||
			!strings.Contains(err.Error(), "rank 2") {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r, err := range each(comms, func(r int, c *Comm) error { return c.Barrier(ctx) }) {
		if !errors.Is(err, ErrAborted) || !errors.Is(err, ErrNonFinite) {
			t.Fatalf("rank %d after abort: %v", r, err)
		}
	}
}

func TestLengthMismatch(t *testing.T) {
	ctx := context.Background()
	comms, _ := memWorld(t, 3, nil)
	errs := each(comms, func(r int, c *Comm) error {
		_, err := c.AllReduce(ctx, make([]float32, 100+r))
		return err
	})
	for r, err := range errs {
		if !errors.Is(err, ErrShapeMismatch) {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func TestLostPeerInMemory(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms, net := memWorld(t, size, func(c *Config) { c.Codec = "raw" })
	net.AddFault(ringtest.Fault{From: 1, Nth: 2, Action: ringtest.CutSender})
	errs := each(comms, func(r int, c *Comm) error {
		_, err := c.AllReduce(ctx, rankData(3, r, 1000))
		return err
	})
	for r, err := range errs {
		if r == 1 {
			continue // the cut rank itself sees its own links fail
		}
		var pl *PeerLostError
		if !errors.Is(err, ErrPeerLost) || !errors.As(err, &pl) || pl.Rank != 1 {
			t.Fatalf("rank %d: %v (want peer lost naming rank 1)", r, err)
		}
	}
}

func TestCloseAbortsPendingAndWaits(t *testing.T) {
	ctx := context.Background()
	comms, _ := memWorld(t, 2, nil)
	// Rank 0 starts an allreduce that rank 1 never joins; Close must end it.
	h := comms[0].AllReduceAsync(ctx, make([]float32, 10))
	h2 := comms[0].AllReduceAsync(ctx, make([]float32, 10))
	if err := comms[0].Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Handle{h, h2} {
		if _, err := h.Wait(); !errors.Is(err, ErrClosed) {
			t.Fatalf("pending after Close: %v", err)
		}
	}
}

func TestContextCancelEndsCollective(t *testing.T) {
	comms, _ := memWorld(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	h := comms[0].AllReduceAsync(ctx, make([]float32, 10))
	cancel()
	if _, err := h.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if err := comms[0].Err(); err == nil {
		t.Fatal("Comm not aborted after a canceled collective")
	}
}

// TestCodecThreadsDefault: unbound, a rank's share is GOMAXPROCS divided by
// the node's ranks; bound by the launcher (VCCL_CPUS), GOMAXPROCS is its
// share, unless a CPU quota made GOMAXPROCS smaller than the bound CPUs.
func TestCodecThreadsDefault(t *testing.T) {
	old := goruntime.GOMAXPROCS(8)
	t.Cleanup(func() { goruntime.GOMAXPROCS(old) })
	for _, tc := range []struct {
		local, cpus string
		want        int
	}{
		{"", "", 8},
		{"4", "", 2},
		{"16", "", 1},
		{"4", "0-7", 8},      // bound to 8 CPUs, GOMAXPROCS 8
		{"4", "0-3,8-11", 8}, // the same, two ranges
		{"4", "0-15", 2},     // quota: GOMAXPROCS 8 of 16 bound CPUs, shared by 4 ranks
		{"4", "garbage", 2},  // unreadable: as unbound
		{"4", "3-1", 2},      // malformed range
	} {
		t.Setenv(EnvLocalWorldSize, tc.local)
		t.Setenv(EnvCPUs, tc.cpus)
		c := Config{}
		if got := c.codecThreads(); got != tc.want {
			t.Errorf("local %q, cpus %q: codecThreads %d, want %d", tc.local, tc.cpus, got, tc.want)
		}
	}
	if n := cpuCount("0,2-4,7"); n != 5 {
		t.Errorf("cpuCount(0,2-4,7) = %d, want 5", n)
	}
}
