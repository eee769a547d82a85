package worker

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/internal/schedenv"
)

// Defaults of the Config fields.
const (
	DefaultBindAddr    = "127.0.0.1"
	DefaultJoinTimeout = 60 * time.Second
	DefaultPeerTimeout = 10 * time.Second

	// minPeerTimeout keeps the failure detector above the scheduling noise
	// of a loaded machine.
	minPeerTimeout = 200 * time.Millisecond
)

// ErrConfig is wrapped by every configuration error of Start and
// ConfigFromEnv.
var ErrConfig = errors.New("worker: bad config")

// Config describes one rank of a job. The zero value of every optional field
// selects the default written in its doc.
type Config struct {
	// Rank is this process's global rank, 0..WorldSize-1.
	Rank int
	// WorldSize is the number of ranks in the job, at least 1.
	WorldSize int
	// LocalRank is the rank among the processes of this node; informational.
	LocalRank int
	// Join lists memberlist addresses (host:port) to join, usually rank 0's.
	// Empty: this rank is the seed and waits for the others to join it.
	Join []string
	// BindAddr is the IP this rank binds and advertises for memberlist and
	// for its link listener. Defaults to 127.0.0.1.
	BindAddr string
	// BindPort is the memberlist port (TCP and UDP). 0 picks a free one.
	BindPort int
	// Secret is the job secret. Required when WorldSize > 1: it derives the
	// memberlist encryption key, the link authentication key and the job id.
	Secret []byte
	// JoinTimeout bounds how long Start waits for the whole world and its
	// links. Defaults to 60s.
	JoinTimeout time.Duration
	// PeerTimeout bounds how long a lost peer or a stalled link goes
	// unnoticed: every pending and later Send/Recv fails within it. Defaults
	// to 10s; at least 200ms.
	PeerTimeout time.Duration
	// MetricsAddr, when set, is a host:port where an HTTP server serves
	// /metrics (Prometheus text format) and /healthz.
	MetricsAddr string
	// SharedMemBytes is the size of the shared-memory ring that carries
	// the payloads of a link whose two ranks run on the same host (same
	// kernel, network and PID namespace), instead of the loopback socket:
	// 0 means DefaultSharedMemBytes, a negative value turns shared memory
	// off (every payload goes over the socket). Otherwise 256 KiB to 1 GiB.
	SharedMemBytes int
	// Logger receives warnings (refused links, lost peers, memberlist
	// warnings). Defaults to stderr with a "[vccl rank N] " prefix.
	Logger *log.Logger
}

// withDefaults returns c with the defaults filled in.
func (c Config) withDefaults() Config {
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.SharedMemBytes == 0 {
		c.SharedMemBytes = DefaultSharedMemBytes
	}
	if c.Logger == nil {
		c.Logger = log.New(os.Stderr, fmt.Sprintf("[vccl rank %d] ", c.Rank), log.LstdFlags|log.Lmicroseconds)
	}
	return c
}

// validate names the first bad field of a Config with defaults applied.
func (c Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: rank %d: %s %s", ErrConfig, c.Rank, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.WorldSize < 1:
		return bad("WorldSize", "is %d; it must be at least 1", c.WorldSize)
	case c.Rank < 0 || c.Rank >= c.WorldSize:
		return bad("Rank", "is %d; it must be in 0..%d for WorldSize %d", c.Rank, c.WorldSize-1, c.WorldSize)
	case c.LocalRank < 0:
		return bad("LocalRank", "is %d; it must not be negative", c.LocalRank)
	case c.WorldSize > 1 && len(c.Secret) == 0:
		return bad("Secret", "is empty; a job secret is required when WorldSize is %d", c.WorldSize)
	case c.BindPort < 0 || c.BindPort > 65535:
		return bad("BindPort", "is %d; it must be in 0..65535", c.BindPort)
	case c.JoinTimeout < 0:
		return bad("JoinTimeout", "is %v; it must be positive", c.JoinTimeout)
	case c.SharedMemBytes > 0 && (c.SharedMemBytes < minSharedMemBytes || c.SharedMemBytes > maxSharedMemBytes):
		return bad("SharedMemBytes", "is %d; it must be in %d..%d, 0 for the default or negative for off", c.SharedMemBytes, minSharedMemBytes, maxSharedMemBytes)
	case c.PeerTimeout < minPeerTimeout:
		return bad("PeerTimeout", "is %v; it must be at least %v", c.PeerTimeout, minPeerTimeout)
	}
	if ip := net.ParseIP(c.BindAddr); ip == nil {
		return bad("BindAddr", "is %q; it must be an IP address", c.BindAddr)
	} else if ip.IsUnspecified() && c.WorldSize > 1 {
		return bad("BindAddr", "is %q; it is advertised to the other ranks, so it must be a concrete address", c.BindAddr)
	}
	for _, j := range c.Join {
		if _, port, err := net.SplitHostPort(j); err != nil {
			return bad("Join", "holds %q: %v", j, err)
		} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return bad("Join", "holds %q: port %q is not in 1..65535", j, port)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return bad("MetricsAddr", "is %q: %v", c.MetricsAddr, err)
		}
	}
	return nil
}

// ConfigFromEnv reads a Config from the Env* variables the launcher sets:
// EnvRank and EnvWorldSize are required; EnvLocalRank, EnvJoin
// (comma-separated), EnvSecret (hex), EnvBindAddr, EnvBindPort,
// EnvMetricsAddr, EnvPeerTimeout and EnvJoinTimeout (Go durations) and
// EnvSharedMem ("off" or a size in bytes) are optional. An error names
// the bad variable. The result is not validated beyond parsing; Start
// validates it.
//
// Under a scheduler the variables that are not set come from it: in a task
// of a Slurm step (srun), the rank from SLURM_PROCID, the world size from
// SLURM_NTASKS, the local rank from SLURM_LOCALID and the rendezvous from
// the first host of the step's nodelist at a port derived from the job and
// step ids (EnvRdzvPort overrides it); in a pod of a Kubernetes Indexed
// Job, the rank from JOB_COMPLETION_INDEX and the rendezvous at index 0's
// DNS name <job>-0.<EnvK8sService>. Rank 0 binds the rendezvous address,
// the others a free port on their node's address. Without EnvSecret, the
// secret is read from the file EnvSecretFile names (derived as the
// launcher's --secret-file); a scheduler job of several ranks with neither
// is refused with a message that says how to set one.
func ConfigFromEnv() (Config, error) {
	env, _, err := schedenv.Overlay(os.LookupEnv, schedenv.System)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	getenv := func(name string) string {
		v, _ := env(name)
		return v
	}
	var c Config
	bad := func(name, val string, err error) error {
		return fmt.Errorf("%w: %s=%q: %v", ErrConfig, name, val, err)
	}
	intVar := func(name string, dst *int, required bool) error {
		v, ok := env(name)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			if required {
				return fmt.Errorf("%w: %s is not set", ErrConfig, name)
			}
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return bad(name, v, errors.New("not an integer"))
		}
		*dst = n
		return nil
	}
	durVar := func(name string, dst *time.Duration) error {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return bad(name, v, fmt.Errorf("not a Go duration such as 10s: %v", err))
		}
		if d <= 0 {
			return bad(name, v, errors.New("must be positive"))
		}
		*dst = d
		return nil
	}
	for _, f := range []func() error{
		func() error { return intVar(EnvRank, &c.Rank, true) },
		func() error { return intVar(EnvWorldSize, &c.WorldSize, true) },
		func() error { return intVar(EnvLocalRank, &c.LocalRank, false) },
		func() error { return intVar(EnvBindPort, &c.BindPort, false) },
		func() error { return durVar(EnvPeerTimeout, &c.PeerTimeout) },
		func() error { return durVar(EnvJoinTimeout, &c.JoinTimeout) },
	} {
		if err := f(); err != nil {
			return Config{}, err
		}
	}
	if v := strings.TrimSpace(getenv(EnvJoin)); v != "" {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Join = append(c.Join, a)
			}
		}
	}
	if v := strings.TrimSpace(getenv(EnvSecret)); v != "" {
		s, err := hex.DecodeString(v)
		if err != nil {
			// Do not echo the secret into logs.
			return Config{}, fmt.Errorf("%w: %s is not hex (%d characters): %v", ErrConfig, EnvSecret, len(v), err)
		}
		c.Secret = s
	}
	if v := strings.TrimSpace(getenv(EnvSharedMem)); v != "" {
		if v == "off" {
			c.SharedMemBytes = -1
		} else if n, err := strconv.Atoi(v); err != nil || n <= 0 {
			return Config{}, bad(EnvSharedMem, v, errors.New(`want "off" or a size in bytes`))
		} else {
			c.SharedMemBytes = n
		}
	}
	c.BindAddr = strings.TrimSpace(getenv(EnvBindAddr))
	c.MetricsAddr = strings.TrimSpace(getenv(EnvMetricsAddr))
	return c, nil
}
