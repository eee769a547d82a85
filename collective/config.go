package collective

import (
	"errors"
	"fmt"
	"log"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/schedenv"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// Environment variables read by ConfigFromEnv in addition to worker's
// (worker.EnvRank, worker.EnvWorldSize, worker.EnvJoin, worker.EnvSecret,
// worker.EnvBindAddr, worker.EnvBindPort, worker.EnvMetricsAddr,
// worker.EnvCodec, worker.EnvBackend, worker.EnvBPV, worker.EnvBucketBytes,
// worker.EnvPeerTimeout, worker.EnvJoinTimeout).
const (
	EnvPreset        = "VCCL_PRESET"         // encoder preset; empty picks the codec's default
	EnvErrorFeedback = "VCCL_ERROR_FEEDBACK" // "1"/"0" (or true/false): error feedback on or off
	EnvWarmupSteps   = "VCCL_WARMUP_STEPS"   // uncompressed allreduces at the start of each stream
	EnvRawBelow      = "VCCL_RAW_BELOW"      // tensors with fewer values go raw
	// EnvTimeout sets Config.Timeout: a Go duration ("90s", "30m") or a
	// number of seconds; "0" turns the timeout off.
	EnvTimeout = "VCCL_TIMEOUT"
	// EnvStreamIdle sets Config.StreamIdle, EnvMaxStreams Config.MaxStreams.
	EnvStreamIdle   = "VCCL_STREAM_IDLE"
	EnvMaxStreams   = "VCCL_MAX_STREAMS"
	EnvCodecThreads = "VCCL_CODEC_THREADS" // threads per video encoder; 0: CPUs per rank on the node
	EnvMaxEncoders  = "VCCL_MAX_ENCODERS"  // open encoders per codec (one per stream family, piece and shape)
	// EnvLocalWorldSize is the number of ranks on this node; the launcher
	// sets it. CodecThreads' default divides GOMAXPROCS by it.
	EnvLocalWorldSize = "VCCL_LOCAL_WORLD_SIZE"
	// EnvCPUs lists the CPUs the launcher bound this rank to (--bind
	// cpus); GOMAXPROCS is then this rank's own share and CodecThreads'
	// default uses it whole.
	EnvCPUs = "VCCL_CPUS"
)

// Default values of Config, as DefaultConfig sets them.
const (
	DefaultBackend      = "auto"
	DefaultBitsPerValue = 1.4
	DefaultWarmupSteps  = 10
	DefaultRawBelow     = 4096
	DefaultBucketBytes  = 25 << 20
	// DefaultTimeout is Config.Timeout's default: 30 minutes, the default
	// timeout of torch.distributed's Gloo process groups (its NCCL ones
	// use 10 minutes). It is long because a collective's wait includes the
	// other ranks' compute: the slowest rank's forward and backward pass,
	// its data loading, a first step that opens codecs.
	DefaultTimeout = 30 * time.Minute
	// DefaultStreamIdle and DefaultMaxStreams are the defaults of
	// Config.StreamIdle and Config.MaxStreams: generous enough for a model
	// whose every parameter is its own stream, allreduced once per step.
	DefaultStreamIdle  = 1000
	DefaultMaxStreams  = 1024
	DefaultMaxEncoders = ring.DefaultMaxEncoders
)

// DefaultCodec is Config.Codec's default: "h264" where the FFmpeg video
// plug-in (package gradcodec/video) is linked — every cgo build of this
// package links it, see video.go; libx265 is several times slower on a
// CPU — else "tensor", the pure-Go entropy-coded codec (lower error than
// h264 at the same rate on the gradients measured; see the README).
var DefaultCodec = defaultCodec()

func defaultCodec() string {
	if gradcodec.Registered("h264") {
		return "h264"
	}
	return "tensor"
}

// Config configures a Comm. Start from DefaultConfig (or ConfigFromEnv): the
// zero value is not valid (its Codec is empty).
type Config struct {
	// Rank of this process, 0..WorldSize-1.
	Rank int
	// LocalRank is the rank among the processes of this node
	// (informational; the launcher sets it).
	LocalRank int
	// WorldSize is the number of ranks. Defaults to 1: a single rank needs
	// no network, and every collective is then the identity.
	WorldSize int
	// Join lists memberlist addresses (host:port) to join, usually rank 0's.
	// Empty: this rank is the seed the others join.
	Join []string
	// BindAddr is the IP this rank binds and advertises. Defaults to
	// "127.0.0.1".
	BindAddr string
	// BindPort is the memberlist port; 0 picks a free one. Defaults to 0.
	BindPort int
	// Secret is the job secret: it encrypts membership and authenticates
	// links. Required when WorldSize > 1.
	Secret []byte
	// MetricsAddr is an optional host:port where the worker serves /metrics
	// and /healthz. Defaults to "" (off).
	MetricsAddr string
	// PeerTimeout bounds failure detection: a lost peer fails every pending
	// and later collective within it. 0 means worker's default (10s).
	PeerTimeout time.Duration
	// JoinTimeout bounds how long Init waits for the whole world. 0 means
	// worker's default (60s).
	JoinTimeout time.Duration
	// SharedMemBytes sizes the shared-memory ring that carries a link's
	// payloads between two ranks on the same host instead of the loopback
	// socket (see worker.Config.SharedMemBytes): 0 means worker's default
	// (32 MiB), negative turns it off. Set by VCCL_SHM ("off" or bytes).
	SharedMemBytes int
	// Timeout bounds how long a collective waits for ranks that never
	// enter it (a straggler stuck in its data loader, a rank that skipped
	// a step): a rank that has been in a collective for Timeout without
	// hearing that its previous rank entered fails it with an error
	// wrapping ErrTimeout that names that rank, and every rank it can
	// reach along the ring returns that same error (see the package doc,
	// "Timeouts"). Defaults to DefaultTimeout (30 minutes, like
	// torch.distributed's Gloo backend); 0 turns it off. Set by
	// VCCL_TIMEOUT.
	Timeout time.Duration
	// Logger receives the worker's log lines. nil means stderr with a
	// "[vccl rank N] " prefix.
	Logger *log.Logger

	// Codec is a registered codec (gradcodec.Codecs): "raw", "fp16",
	// "bf16", "int8", "tensor" (entropy-coded, pure Go), and with cgo
	// "h264" and "hevc". Defaults to
	// DefaultCodec: "h264" with cgo ("hevc" compresses better at the same
	// rate but its software encoder is several times slower), else "tensor".
	Codec string
	// Backend is "auto" (NVENC/NVDEC when they open, else libx264/libx265),
	// "nvenc" or "software". Defaults to "auto".
	Backend string
	// BitsPerValue is the target rate of the tensor and video codecs.
	// Defaults to 1.4.
	BitsPerValue float64
	// Preset is the encoder preset; "" picks the codec's measured default.
	Preset string
	// ErrorFeedback keeps each stream's compression residual and adds it to
	// the next step's input. Defaults to true; turning it off biases lossy
	// codecs and hurts convergence.
	ErrorFeedback bool
	// WarmupSteps is how many allreduces of each stream travel raw before
	// compression starts (for a Bucketer: the first WarmupSteps training
	// steps). Defaults to 10; 0 compresses from the first step.
	WarmupSteps int
	// RawBelow: tensors with fewer values than this, and 1-D tensors (Rows
	// or Cols equal to 1), travel raw. Defaults to 4096; 0 sends only 1-D
	// tensors raw.
	RawBelow int
	// BucketBytes is the default bucket size of a Bucketer, in bytes of
	// float32 gradient. Defaults to 25 MiB (DDP's default).
	BucketBytes int
	// StreamIdle bounds the state kept per stream (WithStream; a
	// Bucketer's buckets): a stream that none of the last StreamIdle
	// allreduces and reduce-scatters of this Comm used is released — its
	// error-feedback residuals, codec contexts and rate control, and its
	// warm-up count (it warms up again if it comes back). Every rank
	// releases at the same call, since every rank makes the same calls.
	// Defaults to 1000 (DefaultStreamIdle); 0 never releases an idle
	// stream. A job whose shapes change every step (default stream names
	// follow the shape) keeps StreamIdle streams; with a video codec each
	// holds an encoder (about 2 MiB for x264) per chunk this rank encodes.
	// Set by VCCL_STREAM_IDLE.
	StreamIdle int
	// MaxStreams caps the number of streams whose state is kept: a new
	// stream beyond it releases the least recently used. Defaults to 1024
	// (DefaultMaxStreams); 0 means no cap. Set by VCCL_MAX_STREAMS.
	MaxStreams int
	// CodecThreads is how many threads a video encoder may use on one
	// picture (libx264 sliced threads, libx265 wavefronts). Defaults to 0:
	// the CPUs available to this rank: GOMAXPROCS when the launcher bound
	// the rank to its CPUs (EnvCPUs) and no CPU quota cut GOMAXPROCS below
	// them, otherwise GOMAXPROCS divided by the ranks on this node
	// (EnvLocalWorldSize, which the launcher sets; 1 without it); at least
	// 1.
	CodecThreads int
	// MaxEncoders bounds the encoders each codec keeps open: one per stream
	// family (a bucket's stream, phase and chunk, shared by its sub-chunks),
	// piece and shape, the least recently used closed first. A rank uses
	// about WorldSize families per bucket each step; keep the cap above
	// that times the pieces, or encoders and their rate control are reopened
	// every step. Defaults to 64 (an x264 encoder holds about 2 MiB).
	MaxEncoders int
}

// codecThreads resolves CodecThreads' default.
func (c *Config) codecThreads() int {
	if c.CodecThreads > 0 {
		return c.CodecThreads
	}
	procs := goruntime.GOMAXPROCS(0)
	local := 1
	if n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(EnvLocalWorldSize))); err == nil && n > 0 {
		local = n
	}
	// Bound by the launcher, GOMAXPROCS is this rank's own share, unless a
	// CPU quota (a cgroup limit, which Go also applies) made it smaller:
	// then the quota is the node's and is shared out as when unbound.
	if share := cpuCount(os.Getenv(EnvCPUs)); share > 0 && procs >= share {
		local = 1
	}
	return min(max(procs/local, 1), 64)
}

// cpuCount counts the CPUs of a kernel CPU list such as "0-3,6" (5); 0 for
// an empty or malformed list.
func cpuCount(list string) int {
	n := 0
	for part := range strings.SplitSeq(strings.TrimSpace(list), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return 0
		}
		n += b - a + 1
	}
	return n
}

// DefaultConfig returns a Config for one rank with every default set.
func DefaultConfig() Config {
	return Config{
		WorldSize:     1,
		BindAddr:      "127.0.0.1",
		Codec:         DefaultCodec,
		Backend:       DefaultBackend,
		BitsPerValue:  DefaultBitsPerValue,
		ErrorFeedback: true,
		WarmupSteps:   DefaultWarmupSteps,
		RawBelow:      DefaultRawBelow,
		BucketBytes:   DefaultBucketBytes,
		Timeout:       DefaultTimeout,
		StreamIdle:    DefaultStreamIdle,
		MaxStreams:    DefaultMaxStreams,
		MaxEncoders:   DefaultMaxEncoders,
	}
}

func validCodec(name string) error { return gradcodec.CheckRegistered(name) }

func validBackend(name string) error {
	switch name {
	case "auto", "nvenc", "software":
		return nil
	}
	return fmt.Errorf("unknown backend %q (want auto, nvenc or software)", name)
}

// validate names the first bad field.
func (c *Config) validate() error {
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("collective: Config.%s %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidArgument)
	}
	switch {
	case c.WorldSize < 1:
		return bad("WorldSize", "is %d, want >= 1", c.WorldSize)
	case c.Rank < 0 || c.Rank >= c.WorldSize:
		return bad("Rank", "is %d, want 0..%d (WorldSize %d)", c.Rank, c.WorldSize-1, c.WorldSize)
	case c.WorldSize > 1 && len(c.Secret) == 0:
		return bad("Secret", "is empty; a job secret is required when WorldSize is %d", c.WorldSize)
	case c.BindPort < 0 || c.BindPort > 65535:
		return bad("BindPort", "is %d, want 0..65535", c.BindPort)
	case c.Codec == "":
		return bad("Codec", "is empty (start from DefaultConfig)")
	}
	// Fields that must not be negative (0 is a default or "off").
	for _, f := range []struct {
		name string
		neg  bool
		v    any
	}{{"PeerTimeout", c.PeerTimeout < 0, c.PeerTimeout}, {"JoinTimeout", c.JoinTimeout < 0, c.JoinTimeout},
		{"Timeout", c.Timeout < 0, c.Timeout}, {"WarmupSteps", c.WarmupSteps < 0, c.WarmupSteps},
		{"RawBelow", c.RawBelow < 0, c.RawBelow}, {"StreamIdle", c.StreamIdle < 0, c.StreamIdle},
		{"MaxStreams", c.MaxStreams < 0, c.MaxStreams}} {
		if f.neg {
			return bad(f.name, "is %v, want >= 0", f.v)
		}
	}
	if err := validCodec(c.Codec); err != nil {
		return bad("Codec", "%v", err)
	}
	if err := validBackend(c.Backend); err != nil {
		return bad("Backend", "%v", err)
	}
	switch {
	case !(c.BitsPerValue > 0 && c.BitsPerValue <= 32):
		return bad("BitsPerValue", "is %v, want in (0, 32]", c.BitsPerValue)
	case c.BucketBytes < 4:
		return bad("BucketBytes", "is %d, want >= 4 (one float32)", c.BucketBytes)
	case c.CodecThreads < 0 || c.CodecThreads > 64:
		return bad("CodecThreads", "is %d, want 0 (the CPUs per rank) to 64", c.CodecThreads)
	case c.MaxEncoders < 1:
		return bad("MaxEncoders", "is %d, want >= 1", c.MaxEncoders)
	}
	return nil
}

// ConfigFromEnv returns DefaultConfig overridden by the VCCL_* environment
// variables the launcher sets: worker.ConfigFromEnv's (rank, world size,
// join addresses, secret, bind address and port, metrics address, timeouts)
// and worker.EnvCodec, worker.EnvBackend, worker.EnvBPV,
// worker.EnvBucketBytes, EnvPreset, EnvErrorFeedback, EnvWarmupSteps,
// EnvRawBelow, EnvTimeout, EnvStreamIdle, EnvMaxStreams, EnvCodecThreads
// and EnvMaxEncoders. Unset variables keep the defaults; VCCL_RANK and
// VCCL_WORLD_SIZE are required, unless the process is a task of a Slurm
// step (srun) or a pod of a Kubernetes Indexed Job: then the rank, world
// size, local rank, rendezvous and bind address come from the scheduler
// where the VCCL_* variables are unset (worker.ConfigFromEnv has the
// mapping), and the job secret from VCCL_SECRET or the file
// VCCL_SECRET_FILE names. An error names the bad variable.
func ConfigFromEnv() (Config, error) {
	w, err := worker.ConfigFromEnv()
	if err != nil {
		return Config{}, fmt.Errorf("collective: %w: %w", err, ErrInvalidArgument)
	}
	c := DefaultConfig()
	c.Rank, c.WorldSize, c.LocalRank = w.Rank, w.WorldSize, w.LocalRank
	c.Join, c.Secret, c.BindPort, c.MetricsAddr = w.Join, w.Secret, w.BindPort, w.MetricsAddr
	c.PeerTimeout, c.JoinTimeout = w.PeerTimeout, w.JoinTimeout
	c.SharedMemBytes = w.SharedMemBytes
	if w.BindAddr != "" {
		c.BindAddr = w.BindAddr
	}
	bad := func(name, val string, err error) error {
		return fmt.Errorf("collective: environment %s=%q: %v: %w", name, val, err, ErrInvalidArgument)
	}
	get := func(name string) (string, bool) {
		v := strings.TrimSpace(os.Getenv(name))
		return v, v != ""
	}
	for _, iv := range []struct {
		name string
		dst  *int
	}{{worker.EnvBucketBytes, &c.BucketBytes}, {EnvWarmupSteps, &c.WarmupSteps}, {EnvRawBelow, &c.RawBelow},
		{EnvStreamIdle, &c.StreamIdle}, {EnvMaxStreams, &c.MaxStreams},
		{EnvCodecThreads, &c.CodecThreads}, {EnvMaxEncoders, &c.MaxEncoders}} {
		if v, ok := get(iv.name); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return Config{}, bad(iv.name, v, errors.New("not an integer"))
			}
			*iv.dst = n
		}
	}
	if v, ok := get(worker.EnvCodec); ok {
		c.Codec = strings.ToLower(v)
	}
	if v, ok := get(worker.EnvBackend); ok {
		c.Backend = strings.ToLower(v)
	}
	if v, ok := get(EnvPreset); ok {
		c.Preset = v
	}
	if v, ok := get(worker.EnvBPV); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return Config{}, bad(worker.EnvBPV, v, errors.New("not a number"))
		}
		c.BitsPerValue = f
	}
	if v, ok := get(EnvErrorFeedback); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, bad(EnvErrorFeedback, v, errors.New("want 1, 0, true or false"))
		}
		c.ErrorFeedback = b
	}
	if v, ok := get(EnvTimeout); ok {
		d, err := parseTimeout(v)
		if err != nil {
			return Config{}, bad(EnvTimeout, v, err)
		}
		c.Timeout = d
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// InJob reports whether the environment describes a rank of a
// multi-process job, so that ConfigFromEnv applies: VCCL_RANK is set (the
// launcher's ranks), or this process is a task of a Slurm step or a pod of
// a Kubernetes Indexed Job. A program may run as a single rank otherwise.
func InJob() bool { return schedenv.InJob(os.LookupEnv) }

// parseTimeout reads a Go duration ("90s", "30m") or a number of seconds.
func parseTimeout(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if !(f >= 0 && f < 1e9) {
			return 0, errors.New("want a duration >= 0")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New(`want a duration such as "90s" or "30m", or a number of seconds`)
	}
	if d < 0 {
		return 0, errors.New("want a duration >= 0")
	}
	return d, nil
}
