package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readerDrain bounds how long the launcher waits, after every rank has
// exited and its process group has been killed, for the ranks' output pipes
// to reach EOF (a process that left the group could hold them open).
const readerDrain = 3 * time.Second

// stopRequest asks the supervisor to stop the job for a reason outside this
// node (a rank on another node failed, a node vanished).
type stopRequest struct {
	code   int    // exit code the launcher should end with
	reason string // printed as "stopping: <reason>"
}

// rankProc is one running rank.
type rankProc struct {
	global, local int
	cmd           *exec.Cmd
	pid           int
	readers       sync.WaitGroup
	pipes         []*os.File // read ends, closed after the drain
	exited        bool
}

// rankExit is how a rank ended, observed with waitid(WNOWAIT): the process
// stays a zombie, so its pid and process group id cannot be reused until
// the supervisor reaps it at the end of the job.
type rankExit struct {
	rp   *rankProc
	code int            // exit code when sig == 0
	sig  syscall.Signal // terminating signal, or 0
	core bool
	err  error // waitid failed
}

func (e rankExit) failed() bool { return e.err != nil || e.sig != 0 || e.code != 0 }

// exitCode is the code the launcher ends with when this exit fails the job.
func (e rankExit) exitCode() int {
	switch {
	case e.err != nil:
		return 1
	case e.sig != 0:
		return 128 + int(e.sig)
	default:
		return e.code
	}
}

func (e rankExit) describe() string {
	who := fmt.Sprintf("rank %d (pid %d)", e.rp.global, e.rp.pid)
	switch {
	case e.err != nil:
		return fmt.Sprintf("%s: cannot wait for it: %v", who, e.err)
	case e.sig != 0:
		s := fmt.Sprintf("%s was killed by signal %d (%v)", who, int(e.sig), e.sig)
		if e.core {
			s += ", core dumped"
		}
		return s
	default:
		return fmt.Sprintf("%s exited with code %d", who, e.code)
	}
}

// sigchldInfo is the head of Linux's siginfo_t for SIGCHLD on 64-bit
// platforms (x/sys/unix keeps these fields unexported).
type sigchldInfo struct {
	Signo, Errno, Code, _ int32
	Pid                   int32
	UID                   uint32
	Status                int32
}

// si_code values of SIGCHLD (include/uapi/asm-generic/siginfo.h).
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// waitExit blocks until pid has exited, without reaping it.
func waitExit(rp *rankProc) rankExit {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, rp.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return rankExit{rp: rp, err: fmt.Errorf("waitid pid %d: %w", rp.pid, err)}
		}
		break
	}
	si := (*sigchldInfo)(unsafe.Pointer(&info))
	switch si.Code {
	case cldExited:
		return rankExit{rp: rp, code: int(si.Status)}
	case cldKilled, cldDumped:
		return rankExit{rp: rp, sig: syscall.Signal(si.Status), core: si.Code == cldDumped}
	default:
		return rankExit{rp: rp, err: fmt.Errorf("waitid pid %d: unexpected si_code %d", rp.pid, si.Code)}
	}
}

// supervisor runs the ranks of one node and stops them together.
type supervisor struct {
	opts   *options
	out    *output
	path   string // resolved program
	layout jobLayout
	sigs   <-chan os.Signal

	// remote delivers stop requests from other nodes; nil on one node.
	remote <-chan stopRequest
	// onStop, if set, is called once when this node decides to stop the
	// job (a local rank failed, a signal, the timeout), before the ranks
	// are signalled, so that the other nodes can stop too.
	onStop func(code int, reason string)

	ranks []*rankProc
	// cpus holds each local rank's CPUs under --bind cpus (nil: unbound).
	cpus [][]int
}

// start starts local rank local.
func (s *supervisor) start(local int) (*rankProc, error) {
	rp := &rankProc{local: local, global: s.layout.nodeRank*s.layout.nproc + local}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("rank %d: stdout pipe: %w", rp.global, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("rank %d: stderr pipe: %w", rp.global, err)
	}
	cmd := exec.Command(s.path, s.opts.args...)
	cmd.Args[0] = s.opts.program
	cmd.Env = s.opts.rankEnv(s.layout, local)
	cmd.Stdout = outW
	cmd.Stderr = errW
	// Own process group: signals reach the rank's children too, and a
	// Ctrl-C on the terminal reaches only the launcher, which forwards it.
	// Pdeathsig: a rank dies with the launcher even if it gets SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// An inherited VCCL_CPUS would claim a binding this rank may lack.
	cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, envCPUs+"=") })
	if s.cpus == nil {
		err = cmd.Start()
	} else {
		cmd.Env = append(cmd.Env, envCPUs+"="+cpuList(s.cpus[local]))
		err = startBound(cmd, s.cpus[local])
		var be *bindError
		if errors.As(err, &be) { // nothing started yet: run this rank unbound
			s.out.logf("rank %d: %v; starting it unbound", rp.global, err)
			cmd.Env = cmd.Env[:len(cmd.Env)-1]
			err = cmd.Start()
		}
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("rank %d: start %s: %w", rp.global, s.opts.program, err)
	}
	rp.cmd = cmd
	rp.pid = cmd.Process.Pid
	rp.pipes = []*os.File{outR, errR}
	prefix := "[" + strconv.Itoa(rp.global) + "] "
	rp.readers.Add(2)
	go func() {
		defer rp.readers.Done()
		if err := s.out.copyLines(s.out.stdout, prefix, outR); err != nil && !errors.Is(err, os.ErrClosed) {
			s.out.logf("rank %d: reading stdout: %v", rp.global, err)
		}
	}()
	go func() {
		defer rp.readers.Done()
		if err := s.out.copyLines(s.out.stderr, prefix, errR); err != nil && !errors.Is(err, os.ErrClosed) {
			s.out.logf("rank %d: reading stderr: %v", rp.global, err)
		}
	}()
	return rp, nil
}

// signalAll sends sig to the process group of every rank.
func (s *supervisor) signalAll(sig syscall.Signal) {
	for _, rp := range s.ranks {
		// The group leader is not reaped before the end of the job, so
		// its pgid still names this rank's group even after it exited.
		if err := syscall.Kill(-rp.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.out.logf("rank %d: signal %v to process group %d: %v", rp.global, sig, rp.pid, err)
		}
	}
}

// run starts the ranks and supervises them until all have exited. It
// returns the launcher's exit code.
func (s *supervisor) run() int {
	exits := make(chan rankExit, s.layout.nproc)
	var waiters sync.WaitGroup
	defer waiters.Wait()

	var (
		stopping bool
		result   int
		graceC   <-chan time.Time
		killed   bool
	)
	// stop begins stopping the job with exit code code.
	stop := func(code int, sig syscall.Signal, local bool, reason string) {
		if stopping {
			return
		}
		stopping = true
		result = code
		if local && s.onStop != nil {
			s.onStop(code, reason)
		}
		s.signalAll(sig)
		t := time.NewTimer(s.opts.grace)
		graceC = t.C
	}

	if s.opts.bind == bindCPUs {
		if cpus, err := allowedCPUs(); err != nil {
			s.out.logf("not binding ranks to CPUs: %v", err)
		} else if s.cpus = cpuShares(cpus, s.layout.nproc); s.cpus == nil {
			if s.opts.verbose {
				s.out.logf("not binding ranks to CPUs: %d ranks do not divide evenly over %d CPUs (%s)", s.layout.nproc, len(cpus), cpuList(cpus))
			}
		} else {
			if s.opts.verbose {
				for i, c := range s.cpus {
					s.out.logf("rank %d runs on CPUs %s", s.layout.nodeRank*s.layout.nproc+i, cpuList(c))
				}
			}
		}
	}
	for i := 0; i < s.layout.nproc; i++ {
		rp, err := s.start(i)
		if err != nil {
			s.out.logf("%v", err)
			stop(exitUsage, syscall.SIGTERM, true, fmt.Sprintf("node %d could not start rank %d", s.layout.nodeRank, s.layout.nodeRank*s.layout.nproc+i))
			break
		}
		s.ranks = append(s.ranks, rp)
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			exits <- waitExit(rp)
		}()
	}

	var timeoutC <-chan time.Time
	if s.opts.timeout > 0 {
		t := time.NewTimer(s.opts.timeout)
		defer t.Stop()
		timeoutC = t.C
	}

	running := len(s.ranks)
	for running > 0 {
		select {
		case e := <-exits:
			running--
			e.rp.exited = true
			if !e.failed() {
				if s.opts.verbose {
					s.out.logf("%s", e.describe())
				}
				continue
			}
			if stopping {
				if s.opts.verbose {
					s.out.logf("%s", e.describe())
				}
				continue
			}
			s.out.logf("%s; stopping the job", e.describe())
			stop(e.exitCode(), syscall.SIGTERM, true, e.describe()+fmt.Sprintf(" on node %d", s.layout.nodeRank))
		case sig := <-s.sigs:
			ss, _ := sig.(syscall.Signal)
			if stopping {
				if !killed && (ss == syscall.SIGINT || ss == syscall.SIGTERM) {
					s.out.logf("received %v again; sending SIGKILL to every rank", sig)
					s.signalAll(syscall.SIGKILL)
					killed = true
				}
				continue
			}
			s.out.logf("received %v; forwarding it to every rank", sig)
			stop(128+int(ss), ss, true, fmt.Sprintf("node %d received %v", s.layout.nodeRank, sig))
		case <-timeoutC:
			timeoutC = nil
			if stopping {
				continue
			}
			s.out.logf("job timed out after %v; stopping it", s.opts.timeout)
			stop(exitTimeout, syscall.SIGTERM, true, fmt.Sprintf("the job timed out after %v on node %d", s.opts.timeout, s.layout.nodeRank))
		case r := <-s.remote:
			if stopping {
				continue
			}
			s.out.logf("stopping: %s", r.reason)
			stop(r.code, syscall.SIGTERM, false, r.reason)
		case <-graceC:
			graceC = nil
			if killed {
				continue
			}
			var left []string
			for _, rp := range s.ranks {
				if !rp.exited {
					left = append(left, strconv.Itoa(rp.global))
				}
			}
			s.out.logf("rank(s) %s still running %v after the stop signal; sending SIGKILL", strings.Join(left, ","), s.opts.grace)
			s.signalAll(syscall.SIGKILL)
			killed = true
		}
	}
	s.finish(stopping)
	return result
}

// finish kills what the ranks left in their process groups, reaps the
// ranks and drains their output.
//
// stopped says the job was being stopped, when processes still dying from
// the stop signal are not worth a message.
func (s *supervisor) finish(stopped bool) {
	var leftovers []int
	for _, rp := range s.ranks {
		if syscall.Kill(-rp.pid, 0) == nil {
			// Only the zombie leader? kill(…, 0) also succeeds for it,
			// so look for other members before calling them leftovers.
			if groupHasOthers(rp.pid) {
				leftovers = append(leftovers, rp.global)
			}
		}
		_ = syscall.Kill(-rp.pid, syscall.SIGKILL)
	}
	if len(leftovers) > 0 && (s.opts.verbose || !stopped) {
		sort.Ints(leftovers)
		s.out.logf("killed processes left behind by rank(s) %v", leftovers)
	}
	for _, rp := range s.ranks {
		// Reap: the status was already taken with WNOWAIT, and
		// Wait's error repeats it.
		_ = rp.cmd.Wait()
	}
	done := make(chan struct{})
	go func() {
		for _, rp := range s.ranks {
			rp.readers.Wait()
		}
		close(done)
	}()
	t := time.NewTimer(readerDrain)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.out.logf("output of some ranks still open %v after they exited (a process outside their group holds it); closing it", readerDrain)
	}
	for _, rp := range s.ranks {
		for _, f := range rp.pipes {
			f.Close()
		}
	}
	<-done
}

// groupHasOthers reports whether process group pgid has a member other
// than its leader, by scanning /proc.
func groupHasOthers(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			return true
		}
	}
	return false
}
