package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/internal/schedenv"
)

// Exit codes of the launcher itself (a failed rank's own code is passed
// through unchanged).
const (
	exitUsage   = 2   // bad input: flags, program, ports, rendezvous
	exitTimeout = 124 // --timeout expired, as timeout(1)
	exitLost    = 1   // a remote node vanished without saying why
)

// Variables the launcher sets in addition to the worker.Env* ones.
const (
	envNodeRank       = "VCCL_NODE_RANK"        // this node's index, 0..nnodes-1
	envNNodes         = "VCCL_NNODES"           // number of nodes in the job
	envLocalWorldSize = "VCCL_LOCAL_WORLD_SIZE" // ranks on this node (-np)
	envCollTimeout    = "VCCL_TIMEOUT"          // collective.EnvTimeout
)

// minSecretLen is the shortest --secret the launcher accepts.
const minSecretLen = 16

var validCodecs = []string{"raw", "fp16", "bf16", "int8", "tensor", "h264", "hevc"}
var validBackends = []string{"auto", "nvenc", "software"}

// usageError marks bad input: the launcher prints it and exits with code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// options is the parsed command line.
type options struct {
	nproc       int
	nnodes      int
	nodeRank    int
	rdzv        string
	rdzvTimeout time.Duration
	addr        string
	port        int
	secret      string
	secretFile  string
	secretName  string // how the secret file was given, for messages: "--secret-file" or "VCCL_SECRET_FILE"
	secretHex   string // VCCL_SECRET from the environment (multi-node without --secret/--secret-file)
	sched       string // "Slurm job J step S" when the job's shape came from Slurm

	codec       string
	backend     string
	bpv         string
	bucketBytes string
	peerTimeout string
	joinTimeout string
	collTimeout string
	shm         string
	metricsPort int
	bind        string

	timeout time.Duration
	grace   time.Duration
	verbose bool

	program string
	args    []string
}

const usageHead = `usage: launcher [flags] -- PROGRAM [ARGS...]

Starts -np processes of PROGRAM as the ranks of one vccl job and supervises
them. Each rank gets the environment that collective.InitFromEnv reads:

  VCCL_RANK, VCCL_LOCAL_RANK, VCCL_WORLD_SIZE   global rank, rank on this node, ranks in the job
  VCCL_JOIN                                     host:port of global rank 0's memberlist
  VCCL_SECRET                                   job secret (hex): fresh and random for a
                                                single node, derived from --secret otherwise
  VCCL_BIND_ADDR, VCCL_BIND_PORT                address this rank binds (port 0: any free one)
  VCCL_NODE_RANK, VCCL_NNODES, VCCL_LOCAL_WORLD_SIZE
  VCCL_CPUS                                     the CPUs the rank is bound to (--bind cpus)
  VCCL_CODEC, VCCL_BACKEND, VCCL_BPV, VCCL_BUCKET_BYTES, VCCL_PEER_TIMEOUT,
  VCCL_JOIN_TIMEOUT, VCCL_METRICS_ADDR          only when the flag is given; a flag
                                                overrides the variable for every rank,
                                                otherwise the launcher's own environment
                                                (or the collective's default) applies

Output: every line is prefixed with "[RANK] "; stdout and stderr stay apart.
The first rank that fails stops the job (SIGTERM, then SIGKILL after --grace,
to the rank's whole process group); the launcher exits with that rank's code
(128+N for signal N), 124 on --timeout, 128+N when it gets signal N itself,
and 2 on bad input.

Flags:
`

const usageTail = `
Examples:
  # four ranks on this machine, HEVC at 1.4 bits per value
  launcher -np 4 --codec hevc --bpv 1.4 -- ./mnist --epochs 3

  # stop the job if it runs for more than ten minutes
  launcher -np 2 --timeout 10m -- ./allreduce_perf -b 1K -e 64M -c 1

  # two nodes, two ranks each (global ranks 0-1 on node 0, 2-3 on node 1);
  # run the same command on both, changing only --node-rank
  head -c 24 /dev/urandom | base64 > job.secret   # copy it to both nodes
  launcher --nnodes 2 --node-rank 0 --rdzv 10.0.0.1:29400 --secret-file job.secret -np 2 -- ./train
  launcher --nnodes 2 --node-rank 1 --rdzv 10.0.0.1:29400 --secret-file job.secret -np 2 -- ./train

  # inside a Slurm allocation: one launcher per node, each a task of one srun
  # step; --nnodes, --node-rank and --rdzv come from Slurm (the first node of
  # the step, port VCCL_RDZV_PORT or one derived from the job and step ids)
  export VCCL_SECRET_FILE=$HOME/job.secret
  srun --ntasks-per-node=1 --kill-on-bad-exit=1 launcher -np 4 -- ./train
`

// newFlagSet declares the flags into o.
func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("launcher", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.nproc, "np", 1, "processes (ranks) to start on this node")
	fs.IntVar(&o.nproc, "nproc-per-node", 1, "same as -np")
	fs.IntVar(&o.nnodes, "nnodes", 1, "number of nodes in the job; more than 1 needs --rdzv and a secret")
	fs.IntVar(&o.nodeRank, "node-rank", 0, "index of this node, 0..nnodes-1; node 0 hosts the rendezvous")
	fs.StringVar(&o.rdzv, "rdzv", "", "rendezvous HOST:PORT (multi-node); node 0 binds it, the others join it")
	fs.DurationVar(&o.rdzvTimeout, "rdzv-timeout", 60*time.Second, "how long to wait for all nodes to meet")
	fs.StringVar(&o.addr, "addr", "", "this node's address as the other nodes reach it\n(default: 127.0.0.1 on one node; otherwise the rendezvous host on node 0\nand the local address routed towards the rendezvous on the others)")
	fs.IntVar(&o.port, "port", 0, "memberlist port of global rank 0 (0: a free one, chosen by the launcher of node 0)")
	fs.StringVar(&o.secret, "secret", "", "job secret, at least 16 characters, the same on every node (visible in ps: prefer --secret-file)")
	fs.StringVar(&o.secretFile, "secret-file", "", "file whose content (surrounding whitespace trimmed) is the job secret")
	fs.StringVar(&o.codec, "codec", "", "sets VCCL_CODEC: "+strings.Join(validCodecs, "|"))
	fs.StringVar(&o.backend, "backend", "", "sets VCCL_BACKEND: "+strings.Join(validBackends, "|"))
	fs.StringVar(&o.bpv, "bpv", "", "sets VCCL_BPV: target bits per value of the tensor and video codecs, e.g. 1.4")
	fs.StringVar(&o.bucketBytes, "bucket-bytes", "", "sets VCCL_BUCKET_BYTES: bucket size of the DDP-style bucketer in bytes")
	fs.StringVar(&o.peerTimeout, "peer-timeout", "", "sets VCCL_PEER_TIMEOUT (Go duration): failure detection bound")
	fs.StringVar(&o.joinTimeout, "join-timeout", "", "sets VCCL_JOIN_TIMEOUT (Go duration): how long ranks wait for the whole world")
	fs.StringVar(&o.collTimeout, "collective-timeout", "", "sets VCCL_TIMEOUT (Go duration, 0: off): how long a collective waits for ranks\nthat never enter it before every rank fails naming them (the library's default: 30m)")
	fs.StringVar(&o.shm, "shm", "", "sets VCCL_SHM: off, or the size in bytes of the shared-memory ring that carries the payloads\nbetween ranks on the same host instead of loopback TCP (the library's default: 33554432, 32 MiB)")
	fs.IntVar(&o.metricsPort, "metrics-port", 0, "if set, local rank i serves /metrics on ADDR:(metrics-port+i) (VCCL_METRICS_ADDR)")
	fs.StringVar(&o.bind, "bind", bindCPUs, "CPU binding of this node's ranks: cpus (rank i runs on the i-th of -np equal shares of the\nlauncher's CPUs, whole cores of one socket first; consecutive ranks share a CPU when the ranks are a\nmultiple of the CPUs; sets VCCL_CPUS) or none (the kernel places them; use it when several launchers\nshare a host, as each binds its rank i to the same CPUs)")
	fs.DurationVar(&o.timeout, "timeout", 0, "end the job after this long (0: no limit); exit code 124")
	fs.DurationVar(&o.grace, "grace", 10*time.Second, "time between SIGTERM and SIGKILL when stopping ranks")
	fs.BoolVar(&o.verbose, "v", false, "verbose: report every rank's exit and the rendezvous' logs")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), usageTail)
	}
	return fs
}

// parseArgs parses and validates the command line. It returns flag.ErrHelp
// for -h and a *usageError for bad input.
func parseArgs(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	// The flag package would print the usage on every error; print it
	// only for -h, to stdout, and a one-line message otherwise.
	fs := newFlagSet(o, io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
		return nil, usagef("%v (launcher -h for help)", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, usagef("no program given: usage: launcher [flags] -- PROGRAM [ARGS...] (launcher -h for help)")
	}
	o.program, o.args = rest[0], rest[1:]
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := o.fromEnv(os.LookupEnv, set); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// validate checks the flags that need no network.
func (o *options) validate() error {
	if o.nproc < 1 {
		return usagef("-np must be at least 1, got %d", o.nproc)
	}
	if o.nnodes < 1 {
		return usagef("--nnodes must be at least 1, got %d", o.nnodes)
	}
	if o.nodeRank < 0 || o.nodeRank >= o.nnodes {
		return usagef("--node-rank must be in 0..%d (--nnodes %d), got %d", o.nnodes-1, o.nnodes, o.nodeRank)
	}
	if o.nnodes > 1 && o.rdzv == "" {
		return usagef("--nnodes %d needs --rdzv HOST:PORT (node 0's rendezvous address)", o.nnodes)
	}
	if o.rdzv != "" {
		host, port, err := net.SplitHostPort(o.rdzv)
		if err != nil {
			return usagef("--rdzv %q: want HOST:PORT: %v", o.rdzv, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return usagef("--rdzv %q: port must be 1..65535", o.rdzv)
		}
		if host == "" {
			return usagef("--rdzv %q: the host is missing (node 0's address as the other nodes reach it)", o.rdzv)
		}
	}
	if o.rdzvTimeout <= 0 {
		return usagef("--rdzv-timeout must be positive, got %v", o.rdzvTimeout)
	}
	if o.addr != "" && net.ParseIP(o.addr) == nil {
		return usagef("--addr %q is not an IP address", o.addr)
	}
	if o.port < 0 || o.port > 65535 {
		return usagef("--port must be 0..65535, got %d", o.port)
	}
	if o.secret != "" && o.secretFile != "" {
		return usagef("give the secret either with --secret or with --secret-file, not both")
	}
	if o.nnodes > 1 && o.secret == "" && o.secretFile == "" && o.secretHex == "" {
		if o.sched != "" {
			return usagef("%s: %d nodes need a job secret shared by all of them: --secret-file, or %s", o.sched, o.nnodes, schedenv.SecretHowTo(&schedenv.Task{Scheduler: schedenv.Slurm}))
		}
		return usagef("--nnodes %d needs a job secret shared by all nodes: --secret or --secret-file (or %s / %s in the environment)", o.nnodes, envSecretFile, envSecret)
	}
	if o.bind != bindCPUs && o.bind != bindNone {
		return usagef("--bind %q: want %s or %s", o.bind, bindCPUs, bindNone)
	}
	if o.codec != "" && !slices.Contains(validCodecs, o.codec) {
		return usagef("--codec %q: want one of %s", o.codec, strings.Join(validCodecs, ", "))
	}
	if o.backend != "" && !slices.Contains(validBackends, o.backend) {
		return usagef("--backend %q: want one of %s", o.backend, strings.Join(validBackends, ", "))
	}
	if o.bpv != "" {
		v, err := strconv.ParseFloat(o.bpv, 64)
		if err != nil || !(v > 0 && v <= 32) {
			return usagef("--bpv %q: want a number of bits per value in (0, 32]", o.bpv)
		}
	}
	if o.bucketBytes != "" {
		v, err := strconv.ParseInt(o.bucketBytes, 10, 64)
		if err != nil || v < 1 {
			return usagef("--bucket-bytes %q: want a positive integer (bytes)", o.bucketBytes)
		}
	}
	for _, d := range []struct{ name, v string }{{"--peer-timeout", o.peerTimeout}, {"--join-timeout", o.joinTimeout}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
			return usagef("%s %q: want a positive Go duration such as 10s", d.name, d.v)
		}
	}
	if o.shm != "" && o.shm != "off" {
		if v, err := strconv.Atoi(o.shm); err != nil || v < 256<<10 || v > 1<<30 {
			return usagef("--shm %q: want off or a size in bytes from 262144 to 1073741824", o.shm)
		}
	}
	if o.collTimeout != "" {
		if v, err := time.ParseDuration(o.collTimeout); err != nil || v < 0 {
			return usagef("--collective-timeout %q: want a Go duration such as 5m, or 0 to turn it off", o.collTimeout)
		}
	}
	if o.metricsPort < 0 || o.metricsPort+o.nproc-1 > 65535 {
		return usagef("--metrics-port %d: ports %d..%d out of range", o.metricsPort, o.metricsPort, o.metricsPort+o.nproc-1)
	}
	if o.timeout < 0 {
		return usagef("--timeout must not be negative, got %v", o.timeout)
	}
	if o.grace <= 0 {
		return usagef("--grace must be positive, got %v", o.grace)
	}
	return nil
}

// resolveProgram checks that the program exists and is executable, as
// exec would find it.
func (o *options) resolveProgram() (string, error) {
	path, err := exec.LookPath(o.program)
	if err != nil {
		return "", usagef("program %q not found or not executable: %v", o.program, err)
	}
	return path, nil
}

// jobSecret returns the raw secret material: the --secret or --secret-file
// content, or, when neither is given, 32 fresh random bytes.
func (o *options) jobSecret() ([]byte, error) {
	var s string
	switch {
	case o.secretHex != "":
		return hex.DecodeString(o.secretHex) // checked by fromEnv
	case o.secretFile != "":
		name := o.secretName
		if name == "" {
			name = "--secret-file"
		}
		b, err := schedenv.ReadSecretFile(o.secretFile)
		if err != nil {
			return nil, usagef("%s %v", name, err)
		}
		s = string(b)
	case o.secret != "":
		s = o.secret
		if len(s) < minSecretLen {
			return nil, usagef("--secret is %d characters long, need at least %d", len(s), minSecretLen)
		}
	default:
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("generate job secret: %w", err)
		}
		return b, nil
	}
	return []byte(s), nil
}

// deriveKey derives a 32-byte key for one purpose from the job secret, so
// that the rendezvous and the workers never share a key.
// that the rendezvous and the workers never share a key. It is
// schedenv.DeriveKey, which collective.InitFromEnv applies to
// VCCL_SECRET_FILE's secret.
func deriveKey(secret []byte, purpose string) []byte { return schedenv.DeriveKey(secret, purpose) }

// codecEnv returns the codec-option variables given by flags.
func (o *options) codecEnv() []string {
	var env []string
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add(envCodec, o.codec)
	add(envBackend, o.backend)
	add(envBPV, o.bpv)
	add(envBucketBytes, o.bucketBytes)
	add(envPeerTimeout, o.peerTimeout)
	add(envJoinTimeout, o.joinTimeout)
	add(envCollTimeout, o.collTimeout)
	add(envSharedMem, o.shm)
	return env
}

// effectiveCodecOptions describes the codec options the ranks will see (the
// flags, else the launcher's environment), for the nodes to compare.
func (o *options) effectiveCodecOptions() string {
	get := func(k, flagV string) string {
		if flagV != "" {
			return flagV
		}
		return os.Getenv(k)
	}
	return strings.Join([]string{
		"codec=" + get(envCodec, o.codec),
		"backend=" + get(envBackend, o.backend),
		"bpv=" + get(envBPV, o.bpv),
		"bucket=" + get(envBucketBytes, o.bucketBytes),
	}, ",")
}

// jobLayout is what the ranks of one node need to know about the job.
type jobLayout struct {
	nnodes, nodeRank, nproc int
	join                    string // host:port of global rank 0's memberlist
	bindAddr                string // this node's address
	rank0Port               int    // VCCL_BIND_PORT of global rank 0
	secretHex               string
}

// rankEnv builds the environment of local rank local: the launcher's own
// environment without the variables the launcher sets, plus those.
func (o *options) rankEnv(l jobLayout, local int) []string {
	global := l.nodeRank*l.nproc + local
	port := 0
	if global == 0 {
		port = l.rank0Port
	}
	set := []string{
		envRank + "=" + strconv.Itoa(global),
		envLocalRank + "=" + strconv.Itoa(local),
		envWorldSize + "=" + strconv.Itoa(l.nnodes*l.nproc),
		envJoin + "=" + l.join,
		envSecret + "=" + l.secretHex,
		envBindAddr + "=" + l.bindAddr,
		envBindPort + "=" + strconv.Itoa(port),
		envNodeRank + "=" + strconv.Itoa(l.nodeRank),
		envNNodes + "=" + strconv.Itoa(l.nnodes),
		envLocalWorldSize + "=" + strconv.Itoa(l.nproc),
	}
	if o.metricsPort > 0 {
		set = append(set, envMetricsAddr+"="+net.JoinHostPort(l.bindAddr, strconv.Itoa(o.metricsPort+local)))
	}
	set = append(set, o.codecEnv()...)
	overridden := map[string]bool{}
	for _, kv := range set {
		overridden[kv[:strings.IndexByte(kv, '=')]] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !overridden[k] {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}
