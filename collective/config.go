package collective

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/schedenv"
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
)

// Default values of Config, as DefaultConfig sets them.
const (
	DefaultBackend      = "auto"
	DefaultBitsPerValue = 1.4
	DefaultWarmupSteps  = 10
	DefaultRawBelow     = 4096
	DefaultBucketBytes  = 25 << 20
)

// DefaultCodec is Config.Codec's default: "h264" where the FFmpeg video
// plug-in (package gradcodec/video) is linked — every cgo build of this
// package links it, see video.go — since libx265 is several times slower on
// a CPU; else "int8", the best pure-Go codec registered by default.
var DefaultCodec = defaultCodec()

func defaultCodec() string {
	if gradcodec.Registered("h264") {
		return "h264"
	}
	return "int8"
}

func isVideo(codec string) bool { return codec == "h264" || codec == "hevc" }

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
	// Logger receives the worker's log lines. nil means stderr with a
	// "[vccl rank N] " prefix.
	Logger *log.Logger

	// Codec is a registered codec (gradcodec.Codecs): "raw", "fp16",
	// "bf16", "int8", and with cgo "h264" and "hevc". Defaults to
	// DefaultCodec: "h264" with cgo ("hevc" compresses better at the same
	// rate but its software encoder is several times slower), else "int8".
	Codec string
	// Backend is "auto" (NVENC/NVDEC when they open, else libx264/libx265),
	// "nvenc" or "software". Defaults to "auto".
	Backend string
	// BitsPerValue is the target rate of the video codecs. Defaults to 1.4.
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
	case c.PeerTimeout < 0:
		return bad("PeerTimeout", "is %v, want >= 0", c.PeerTimeout)
	case c.JoinTimeout < 0:
		return bad("JoinTimeout", "is %v, want >= 0", c.JoinTimeout)
	case c.Codec == "":
		return bad("Codec", "is empty (start from DefaultConfig)")
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
	case c.WarmupSteps < 0:
		return bad("WarmupSteps", "is %d, want >= 0", c.WarmupSteps)
	case c.RawBelow < 0:
		return bad("RawBelow", "is %d, want >= 0", c.RawBelow)
	case c.BucketBytes < 4:
		return bad("BucketBytes", "is %d, want >= 4 (one float32)", c.BucketBytes)
	}
	return nil
}

// ConfigFromEnv returns DefaultConfig overridden by the VCCL_* environment
// variables the launcher sets: worker.ConfigFromEnv's (rank, world size,
// join addresses, secret, bind address and port, metrics address, timeouts)
// and worker.EnvCodec, worker.EnvBackend, worker.EnvBPV,
// worker.EnvBucketBytes, EnvPreset, EnvErrorFeedback, EnvWarmupSteps and
// EnvRawBelow. Unset variables keep the defaults; VCCL_RANK and
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
	}{{worker.EnvBucketBytes, &c.BucketBytes}, {EnvWarmupSteps, &c.WarmupSteps}, {EnvRawBelow, &c.RawBelow}} {
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
