// Package schedenv maps what a cluster scheduler tells a task — Slurm's
// srun, a Kubernetes Indexed Job — to the VCCL_* variables that
// collective.InitFromEnv and the launcher read, and reads the job secret
// from VCCL_SECRET_FILE. Explicit VCCL_* variables always win over the
// scheduler's; the scheduler only fills in what is not set.
//
// Slurm (a task of an srun step: SLURM_PROCID and SLURM_STEP_ID are set):
//
//	VCCL_RANK        SLURM_PROCID
//	VCCL_WORLD_SIZE  SLURM_NTASKS (SLURM_STEP_NUM_TASKS where it is missing)
//	VCCL_LOCAL_RANK  SLURM_LOCALID
//	VCCL_JOIN        first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST),
//	                 port VCCL_RDZV_PORT or SlurmPort(SLURM_JOB_ID, SLURM_STEP_ID)
//
// Kubernetes (a pod of an Indexed Job: JOB_COMPLETION_INDEX is set):
//
//	VCCL_RANK        JOB_COMPLETION_INDEX
//	VCCL_WORLD_SIZE  must be set in the manifest (the Job's completions)
//	VCCL_LOCAL_RANK  0 (one rank per pod)
//	VCCL_JOIN        <job>-0.<VCCL_K8S_SERVICE>, the stable DNS name of index 0
//	                 (job: VCCL_K8S_JOB, else the pod's host name without its
//	                 "-<index>" suffix), port VCCL_RDZV_PORT or 29400
//
// In both, rank 0 binds and advertises the rendezvous port on its own
// address, the others bind a free port; every rank's VCCL_BIND_ADDR is its
// node's address (rank 0: the rendezvous host's, checked to be local;
// Slurm's other ranks: the local address routed towards rank 0;
// Kubernetes: the pod's host name's), never 127.0.0.1 unless that is where
// the job runs. The package imports the standard library and
// internal/hostlist only, so that the pure-Go launcher can use it.
package schedenv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/vccl/vccl/internal/hostlist"
)

// The VCCL_* variables this package reads and fills in. They are
// worker.Env*'s names (worker/env.go; worker's tests keep them equal).
const (
	EnvRank       = "VCCL_RANK"
	EnvLocalRank  = "VCCL_LOCAL_RANK"
	EnvWorldSize  = "VCCL_WORLD_SIZE"
	EnvJoin       = "VCCL_JOIN"
	EnvSecret     = "VCCL_SECRET"
	EnvBindAddr   = "VCCL_BIND_ADDR"
	EnvBindPort   = "VCCL_BIND_PORT"
	EnvSecretFile = "VCCL_SECRET_FILE" // file whose content (trimmed, at least 16 characters) is the job secret
	EnvRdzvPort   = "VCCL_RDZV_PORT"   // rendezvous port under a scheduler (rank 0's memberlist port)
	EnvK8sService = "VCCL_K8S_SERVICE" // headless Service of a Kubernetes Indexed Job (the pods' subdomain)
	EnvK8sJob     = "VCCL_K8S_JOB"     // the Job's name; defaults to the pod's host name without "-<index>"
)

// DefaultK8sPort is the rendezvous port of a Kubernetes job (every pod has
// its own network namespace, so a fixed port is free).
const DefaultK8sPort = 29400

// Slurm's rendezvous ports: SlurmPort maps a job and step into
// [SlurmPortBase, SlurmPortBase+SlurmPortCount), below Linux's ephemeral
// range (32768 and up) so that no outgoing connection holds it.
const (
	SlurmPortBase  = 20000
	SlurmPortCount = 12000
)

// MinSecretLen is the shortest secret VCCL_SECRET_FILE may hold (as the
// launcher's --secret-file).
const MinSecretLen = 16

// Scheduler names.
const (
	Slurm      = "slurm"
	Kubernetes = "kubernetes"
)

// Lookup reads one environment variable, as os.LookupEnv.
type Lookup func(name string) (string, bool)

// Task is what a scheduler says about this process. Fields whose variables
// were missing or malformed carry their error in the matching *Err field;
// Overlay reports it only when it needs the field.
type Task struct {
	Scheduler string // Slurm or Kubernetes
	// Where: "Slurm job 12 step 0" or "Kubernetes job train index 3", for
	// messages.
	Where string

	Rank, WorldSize, LocalRank  int
	RankErr, WorldErr, LocalErr error

	// RdzvHost is the host name of rank 0; RdzvPort the default
	// rendezvous port (VCCL_RDZV_PORT overrides it).
	RdzvHost string
	RdzvPort int
	RdzvErr  error
}

func get(env Lookup, name string) (string, bool) {
	v, ok := env(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func intVar(env Lookup, name string) (int, error) {
	v, ok := get(env, name)
	if !ok {
		return 0, fmt.Errorf("%s is not set", name)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

// SlurmPort is the default rendezvous port of step step of Slurm job job:
// SlurmPortBase + (16·job + step mod 16) mod SlurmPortCount. Up to 16
// concurrent steps of one job and jobs up to 750 ids apart never share a
// port.
func SlurmPort(job, step uint64) int {
	return SlurmPortBase + int((job*16+step%16)%SlurmPortCount)
}

// Detect returns the scheduler's view of this process, or nil when it is
// not a task of a Slurm step or a Kubernetes Indexed Job. A Slurm batch
// script or salloc shell (SLURM_PROCID without SLURM_STEP_ID) is not a
// step: its ranks come from srun.
func Detect(env Lookup) *Task {
	_, procid := get(env, "SLURM_PROCID")
	stepS, step := get(env, "SLURM_STEP_ID")
	if !step {
		stepS, step = get(env, "SLURM_STEPID")
	}
	if procid && step {
		return detectSlurm(env, stepS)
	}
	if _, ok := get(env, "JOB_COMPLETION_INDEX"); ok {
		return detectK8s(env)
	}
	return nil
}

func detectSlurm(env Lookup, stepS string) *Task {
	jobS, _ := get(env, "SLURM_JOB_ID")
	if jobS == "" {
		jobS, _ = get(env, "SLURM_JOBID")
	}
	t := &Task{Scheduler: Slurm, Where: fmt.Sprintf("Slurm job %s step %s", jobS, stepS)}
	t.Rank, t.RankErr = intVar(env, "SLURM_PROCID")
	if _, ok := get(env, "SLURM_NTASKS"); ok {
		t.WorldSize, t.WorldErr = intVar(env, "SLURM_NTASKS")
	} else {
		t.WorldSize, t.WorldErr = intVar(env, "SLURM_STEP_NUM_TASKS")
	}
	if t.WorldErr == nil && t.WorldSize < 1 {
		t.WorldErr = fmt.Errorf("SLURM_NTASKS is %d", t.WorldSize)
	}
	t.LocalRank, t.LocalErr = intVar(env, "SLURM_LOCALID")

	name := "SLURM_STEP_NODELIST"
	list, ok := get(env, name)
	if !ok {
		name = "SLURM_JOB_NODELIST"
		list, ok = get(env, name)
	}
	if !ok {
		t.RdzvErr = errors.New("neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set")
	} else if h, err := hostlist.First(list); err != nil {
		t.RdzvErr = fmt.Errorf("%s: %v", name, err)
	} else {
		t.RdzvHost = h
	}
	job, err1 := strconv.ParseUint(jobS, 10, 64)
	step, err2 := strconv.ParseUint(stepS, 10, 64)
	if err1 != nil || err2 != nil {
		if t.RdzvErr == nil {
			t.RdzvErr = fmt.Errorf("SLURM_JOB_ID=%q and SLURM_STEP_ID=%q must be integers to derive the rendezvous port (or set %s)", jobS, stepS, EnvRdzvPort)
		}
	} else {
		t.RdzvPort = SlurmPort(job, step)
	}
	return t
}

func detectK8s(env Lookup) *Task {
	idx, _ := get(env, "JOB_COMPLETION_INDEX")
	t := &Task{Scheduler: Kubernetes, RdzvPort: DefaultK8sPort}
	t.Rank, t.RankErr = intVar(env, "JOB_COMPLETION_INDEX")
	// The world size is not in a pod's environment: the manifest sets
	// VCCL_WORLD_SIZE, which Overlay reads before the Task.
	t.WorldErr = fmt.Errorf("a Kubernetes Indexed Job does not tell its pods the number of ranks: set %s in the manifest to the Job's completions", EnvWorldSize)

	job, ok := get(env, EnvK8sJob)
	if !ok {
		// An Indexed Job's pod is named <job>-<index>-<random> and its
		// host name is <job>-<index>.
		host, _ := get(env, "HOSTNAME")
		if h, found := strings.CutSuffix(host, "-"+idx); found && h != "" {
			job = h
		} else {
			t.RdzvErr = fmt.Errorf("cannot tell the Job's name: the host name %q does not end in -%s (set %s to the Job's name)", host, idx, EnvK8sJob)
		}
	}
	t.Where = fmt.Sprintf("Kubernetes job %s index %s", job, idx)
	if svc, ok := get(env, EnvK8sService); ok {
		if t.RdzvErr == nil {
			t.RdzvHost = job + "-0." + svc
		}
	} else if t.RdzvErr == nil {
		t.RdzvErr = fmt.Errorf("%s is not set: name the Job's headless Service (its pods' subdomain) so that index 0 is reachable as <job>-0.<service>", EnvK8sService)
	}
	return t
}

// Net is the network knowledge Overlay needs; System is the machine's.
type Net interface {
	// LookupIP resolves host to one IP address, IPv4 first.
	LookupIP(host string) (string, error)
	// RouteTo returns the local IP the kernel would use to reach
	// hostport (no packet is sent).
	RouteTo(hostport string) (string, error)
	// CheckBind fails when ip:port cannot be bound for TCP and UDP here
	// (ip not local, or the port taken).
	CheckBind(ip string, port int) error
	// Hostname is os.Hostname.
	Hostname() (string, error)
}

// System is the Net of this machine.
var System Net = systemNet{}

type systemNet struct{}

func (systemNet) LookupIP(host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %s", host)
	}
	return ips[0].String(), nil
}

func (systemNet) RouteTo(hostport string) (string, error) {
	c, err := net.Dial("udp", hostport)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

func (systemNet) CheckBind(ip string, port int) error {
	hp := net.JoinHostPort(ip, strconv.Itoa(port))
	l, err := net.Listen("tcp", hp)
	if err != nil {
		return err
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", hp)
	if err != nil {
		return err
	}
	return u.Close()
}

func (systemNet) Hostname() (string, error) { return os.Hostname() }

// DeriveKey derives a 32-byte key for one purpose from the job secret. The
// launcher gives its ranks DeriveKey(secret, "worker") as VCCL_SECRET, so a
// rank that reads the same secret from VCCL_SECRET_FILE gets the same key.
func DeriveKey(secret []byte, purpose string) []byte {
	h := sha256.New()
	h.Write([]byte("vccl/launcher/" + purpose + "\x00"))
	h.Write(secret)
	return h.Sum(nil)
}

// MaxSecretFile bounds what ReadSecretFile reads, so that a wrong path
// (a log, /dev/zero) is an error rather than an unbounded read.
const MaxSecretFile = 4096

// ReadSecretFile returns the job secret held in path: its content with
// surrounding white space trimmed, at least MinSecretLen characters, the
// file at most MaxSecretFile bytes.
func ReadSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxSecretFile {
		return nil, fmt.Errorf("%s: more than %d bytes: not a secret file", path, MaxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinSecretLen {
		return nil, fmt.Errorf("%s: the secret is %d characters long, need at least %d", path, len(s), MinSecretLen)
	}
	return []byte(s), nil
}

// SecretHowTo says how to give a job its secret.
func SecretHowTo(t *Task) string {
	switch {
	case t != nil && t.Scheduler == Kubernetes:
		return "mount a Kubernetes Secret in the pod template and set " + EnvSecretFile + " to its file, or set " + EnvSecret + " (hex) from it (see examples/kubernetes)"
	case t != nil && t.Scheduler == Slurm:
		return "export " + EnvSecretFile + "=FILE (a file on a shared file system holding at least 16 characters, e.g. made by `head -c 32 /dev/urandom | base64 > FILE`) " +
			"or " + EnvSecret + "=HEX (e.g. `export VCCL_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')`) before srun; srun passes it to every rank"
	}
	return "set " + EnvSecretFile + "=FILE (at least 16 characters) or " + EnvSecret + "=HEX, the same for every rank"
}

// Overlay returns a Lookup that answers the VCCL_* variables: those set in
// env as they are, and the ones env lacks from the scheduler's Task (nil
// when there is none) and from VCCL_SECRET_FILE. VCCL_SECRET wins over
// VCCL_SECRET_FILE; a file's secret becomes DeriveKey(secret, "worker") in
// hex, as the launcher's --secret-file. A scheduler job of several ranks
// without a secret, a malformed scheduler variable that is needed, or a
// rank 0 that cannot bind the rendezvous address is an error that says
// what to set. Other variables pass through unchanged.
func Overlay(env Lookup, n Net) (Lookup, *Task, error) {
	vals := map[string]string{}
	have := func(name string) bool {
		_, ok := get(env, name)
		return ok
	}
	t := Detect(env)
	if t != nil {
		if err := t.fill(env, n, vals, have); err != nil {
			return nil, t, fmt.Errorf("%s: %w", t.Where, err)
		}
	}
	if !have(EnvSecret) {
		if path, ok := get(env, EnvSecretFile); ok {
			s, err := ReadSecretFile(path)
			if err != nil {
				return nil, t, fmt.Errorf("%s: %w", EnvSecretFile, err)
			}
			vals[EnvSecret] = hex.EncodeToString(DeriveKey(s, "worker"))
		} else if t != nil {
			world, ok := vals[EnvWorldSize]
			if !ok {
				world, _ = get(env, EnvWorldSize)
			}
			if w, err := strconv.Atoi(world); err == nil && w > 1 {
				return nil, t, fmt.Errorf("%s: no job secret for this job of %d ranks: %s", t.Where, w, SecretHowTo(t))
			}
		}
	}
	return func(name string) (string, bool) {
		if v, ok := vals[name]; ok {
			return v, true
		}
		return env(name)
	}, t, nil
}

// fill puts the variables env lacks into vals.
func (t *Task) fill(env Lookup, n Net, vals map[string]string, have func(string) bool) error {
	intOf := func(name string, v int, err error) (int, error) {
		if s, ok := get(env, name); ok {
			n, perr := strconv.Atoi(s)
			if perr != nil {
				return 0, fmt.Errorf("%s=%q is not an integer", name, s)
			}
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		vals[name] = strconv.Itoa(v)
		return v, nil
	}
	rank, err := intOf(EnvRank, t.Rank, t.RankErr)
	if err != nil {
		return err
	}
	world, err := intOf(EnvWorldSize, t.WorldSize, t.WorldErr)
	if err != nil {
		return err
	}
	localV, localErr := t.LocalRank, t.LocalErr
	if t.Scheduler == Kubernetes {
		localV, localErr = 0, nil
	}
	if _, err := intOf(EnvLocalRank, localV, localErr); err != nil {
		return err
	}
	if world <= 1 {
		return nil // one rank needs no rendezvous
	}

	join, joinSet := get(env, EnvJoin)
	if !joinSet {
		if t.RdzvErr != nil {
			return fmt.Errorf("no rendezvous address (or set %s=HOST:PORT of rank 0): %w", EnvJoin, t.RdzvErr)
		}
		port := t.RdzvPort
		if p, ok := get(env, EnvRdzvPort); ok {
			v, err := strconv.Atoi(p)
			if err != nil || v < 1 || v > 65535 {
				return fmt.Errorf("%s=%q is not a port in 1..65535", EnvRdzvPort, p)
			}
			port = v
		}
		join = net.JoinHostPort(t.RdzvHost, strconv.Itoa(port))
		vals[EnvJoin] = join
	}
	first, _, _ := strings.Cut(join, ",")
	host, portS, err := net.SplitHostPort(strings.TrimSpace(first))
	if err != nil {
		return fmt.Errorf("%s=%q: %v", EnvJoin, join, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("%s=%q: port %q is not in 1..65535", EnvJoin, join, portS)
	}
	source := "the first host of the step's nodelist"
	if t.Scheduler == Kubernetes {
		source = "index 0's DNS name"
	}
	if joinSet {
		source = EnvJoin
	}

	if rank == 0 && !have(EnvBindPort) {
		vals[EnvBindPort] = strconv.Itoa(port)
	} else if !have(EnvBindPort) {
		vals[EnvBindPort] = "0"
	}
	if have(EnvBindAddr) {
		return nil
	}
	var addr string
	switch {
	case t.Scheduler == Kubernetes:
		// The pod's own address: its host name is in the pod's
		// /etc/hosts, while index 0's DNS record may not exist yet.
		h, err := n.Hostname()
		if err != nil {
			return fmt.Errorf("this pod's address (or set %s, e.g. from status.podIP): %v", EnvBindAddr, err)
		}
		if addr, err = n.LookupIP(h); err != nil {
			return fmt.Errorf("this pod's address from its host name %q (or set %s, e.g. from status.podIP): %v", h, EnvBindAddr, err)
		}
	case rank == 0:
		// Rank 0 is the seed: it binds the rendezvous address itself.
		ip, err := n.LookupIP(host)
		if err != nil {
			return fmt.Errorf("rank 0 cannot resolve the rendezvous host %q (%s): %v (set %s=HOST:PORT with an address of rank 0's node)", host, source, err, EnvJoin)
		}
		if err := n.CheckBind(ip, port); err != nil {
			return fmt.Errorf("rank 0 cannot bind the rendezvous address %s (%s, resolved to %s): %v (is rank 0 on that node? is the port taken? set %s or %s)",
				net.JoinHostPort(host, portS), source, ip, err, EnvRdzvPort, EnvJoin)
		}
		addr = ip
	default:
		ip, err := n.LookupIP(host)
		if err != nil {
			return fmt.Errorf("cannot resolve the rendezvous host %q (%s): %v (set %s=HOST:PORT of rank 0, or %s)", host, source, err, EnvJoin, EnvBindAddr)
		}
		if addr, err = n.RouteTo(net.JoinHostPort(ip, portS)); err != nil {
			return fmt.Errorf("no route to the rendezvous %s (%s): %v (set %s)", net.JoinHostPort(ip, portS), source, err, EnvBindAddr)
		}
	}
	vals[EnvBindAddr] = addr
	return nil
}

// InJob reports whether env describes a rank of a multi-process job:
// VCCL_RANK is set (the launcher's ranks), or this process is a task of a
// Slurm step or a pod of a Kubernetes Indexed Job.
func InJob(env Lookup) bool {
	_, ok := get(env, EnvRank)
	return ok || Detect(env) != nil
}
