package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vccl/vccl/internal/schedenv"
)

// rdzvLabel keeps the rendezvous' memberlist apart from the workers' own.
const rdzvLabel = "vccl-launcher-rdzv"

// nodeMeta is what every launcher announces in its memberlist node meta
// (at most memberlist.MetaMaxSize bytes).
type nodeMeta struct {
	V        int    `json:"v"`
	NodeRank int    `json:"k"`
	NNodes   int    `json:"nn"`
	NProc    int    `json:"np"`
	Addr     string `json:"a"`            // address the node's ranks bind
	Port0    int    `json:"p0,omitempty"` // node 0: memberlist port of global rank 0
	Codec    string `json:"c"`            // effective codec options, compared across nodes
}

// rdzvMsg is a user message between launchers (memberlist SendReliable).
type rdzvMsg struct {
	Type   string `json:"t"` // "stop" or "done"
	From   int    `json:"f"` // sender's node rank
	Code   int    `json:"c,omitempty"`
	Reason string `json:"r,omitempty"`
}

type rdzvEventKind int

const (
	evChange     rdzvEventKind = iota // a node joined or changed
	evLeave                           // a node left or was declared dead
	evMsg                             // a user message arrived
	evLeaveCheck                      // leaveGrace after an evLeave
)

// leaveGrace is how long a node that left without a "done" message may
// still have one in flight (messages go over TCP, the leave over UDP
// gossip) before the other nodes call it lost.
const leaveGrace = time.Second

type rdzvEvent struct {
	kind rdzvEventKind
	name string
	addr string
	meta []byte
	msg  rdzvMsg
}

// rendezvous is this node's membership in the launchers' memberlist. It
// implements memberlist.Delegate and memberlist.EventDelegate; those
// callbacks only queue events and never block.
type rendezvous struct {
	ml       *memberlist.Memberlist
	self     nodeMeta
	metaJSON []byte

	mu     sync.Mutex
	queue  []rdzvEvent
	notify chan struct{} // capacity 1: "the queue is not empty"

	sends sync.WaitGroup // in-flight stop/done broadcasts
}

var (
	_ memberlist.Delegate      = (*rendezvous)(nil)
	_ memberlist.EventDelegate = (*rendezvous)(nil)
)

func (r *rendezvous) push(e rdzvEvent) {
	r.mu.Lock()
	r.queue = append(r.queue, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// drain returns and clears the queued events.
func (r *rendezvous) drain() []rdzvEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue
	r.queue = nil
	return q
}

// NodeMeta implements memberlist.Delegate.
func (r *rendezvous) NodeMeta(limit int) []byte { return r.metaJSON }

// NotifyMsg implements memberlist.Delegate.
func (r *rendezvous) NotifyMsg(b []byte) {
	var m rdzvMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return // not ours; the label and the key keep strangers out
	}
	r.push(rdzvEvent{kind: evMsg, msg: m})
}

// GetBroadcasts implements memberlist.Delegate.
func (r *rendezvous) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (r *rendezvous) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (r *rendezvous) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin implements memberlist.EventDelegate.
func (r *rendezvous) NotifyJoin(n *memberlist.Node) { r.push(nodeEvent(evChange, n)) }

// NotifyLeave implements memberlist.EventDelegate.
func (r *rendezvous) NotifyLeave(n *memberlist.Node) { r.push(nodeEvent(evLeave, n)) }

// NotifyUpdate implements memberlist.EventDelegate.
func (r *rendezvous) NotifyUpdate(n *memberlist.Node) { r.push(nodeEvent(evChange, n)) }

func nodeEvent(k rdzvEventKind, n *memberlist.Node) rdzvEvent {
	return rdzvEvent{kind: k, name: n.Name, addr: n.Address(), meta: append([]byte(nil), n.Meta...)}
}

// multiNode is the state of a multi-node job on this node.
type multiNode struct {
	opts   *options
	out    *output
	sigs   <-chan os.Signal
	secret []byte

	rz    *rendezvous
	names map[string]int // memberlist node name -> node rank, set by check

	// rdzvNode is node 0 as the rendezvous address names it, for a node
	// that has reached that address but not yet seen node 0 (see gather).
	rdzvNode memberlist.Node
	// joinAnswered: the rendezvous address has answered a join.
	joinAnswered bool
}

// setup creates this node's memberlist: node 0 binds the rendezvous
// address, the others bind their own address on a free port.
func (m *multiNode) setup() (nodeAddr string, err error) {
	o := m.opts
	rdzvHost, rdzvPortS, _ := net.SplitHostPort(o.rdzv)
	rdzvPort, _ := strconv.Atoi(rdzvPortS)
	rdzvIP, err := schedenv.System.LookupIP(rdzvHost) // IPv4 first
	if err != nil {
		return "", usagef("--rdzv %s: cannot resolve %q: %v", o.rdzv, rdzvHost, err)
	}
	bindIP, bindPort := rdzvIP, rdzvPort
	m.rdzvNode = memberlist.Node{Name: "node 0", Addr: net.ParseIP(rdzvIP), Port: uint16(rdzvPort)}
	if o.nodeRank == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(rdzvIP, "0"))
		if err != nil {
			return "", usagef("--rdzv %s: node 0 binds the rendezvous, but %s is not an address of this node: %v", o.rdzv, rdzvIP, err)
		}
		l.Close()
		nodeAddr = rdzvIP
		if o.addr != "" {
			nodeAddr = o.addr
		}
	} else {
		nodeAddr = o.addr
		if nodeAddr == "" {
			a, err := schedenv.System.RouteTo(net.JoinHostPort(rdzvIP, rdzvPortS)) // the local IP towards it
			if err != nil {
				return "", usagef("--rdzv %s: no route to the rendezvous from this node: %v (set --addr)", o.rdzv, err)
			}
			nodeAddr = a
		}
		bindIP, bindPort = nodeAddr, 0
	}

	self := nodeMeta{V: 1, NodeRank: o.nodeRank, NNodes: o.nnodes, NProc: o.nproc, Addr: nodeAddr, Codec: o.effectiveCodecOptions()}
	if o.nodeRank == 0 {
		port := o.port
		if port == rdzvPort && nodeAddr == rdzvIP {
			return "", usagef("--port %d is the rendezvous port; global rank 0 needs another one", port)
		}
		if port == 0 {
			port, err = pickFreePort(nodeAddr, rdzvPort)
			if err != nil {
				return "", usagef("--addr %s: no free port for global rank 0: %v", nodeAddr, err)
			}
		} else if err := checkPortFree(nodeAddr, port); err != nil {
			return "", usagef("--port %d: %v", port, err)
		}
		self.Port0 = port
	}
	metaJSON, err := json.Marshal(self)
	if err != nil {
		return "", fmt.Errorf("encode node meta: %w", err)
	}
	if len(metaJSON) > memberlist.MetaMaxSize {
		return "", usagef("node meta is %d bytes, more than memberlist's %d (codec options too long?)", len(metaJSON), memberlist.MetaMaxSize)
	}
	rz := &rendezvous{self: self, metaJSON: metaJSON, notify: make(chan struct{}, 1)}

	cfg := memberlist.DefaultLANConfig()
	cfg.Name = fmt.Sprintf("node-%d-%s", o.nodeRank, randomHex(4))
	cfg.BindAddr = bindIP
	cfg.BindPort = bindPort
	cfg.AdvertiseAddr = bindIP
	cfg.AdvertisePort = bindPort
	cfg.SecretKey = deriveKey(m.secret, "rdzv")
	cfg.Label = rdzvLabel
	cfg.Delegate = rz
	cfg.Events = rz
	cfg.LogOutput = io.Discard
	if o.verbose {
		cfg.LogOutput = nil
		cfg.Logger = log.New(lineLogger{m.out}, "memberlist: ", 0)
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		if o.nodeRank == 0 {
			return "", usagef("--rdzv %s: node 0 cannot bind the rendezvous address (port in use, or not an address of this node?): %v", o.rdzv, err)
		}
		return "", usagef("cannot start the rendezvous client on %s: %v", bindIP, err)
	}
	rz.ml = ml
	m.rz = rz
	return nodeAddr, nil
}

// lineLogger sends memberlist's log lines through the launcher's output.
type lineLogger struct{ out *output }

func (l lineLogger) Write(p []byte) (int, error) {
	l.out.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// rdzvError ends the rendezvous with an exit code.
type rdzvError struct {
	code   int
	msg    string
	remote bool // another node stopped the job: no need to tell the others
}

func (e *rdzvError) Error() string { return e.msg }

// gather waits until all nodes have met and agree on the job. It returns
// the meta of every node, indexed by node rank.
func (m *multiNode) gather() ([]nodeMeta, error) {
	o, rz := m.opts, m.rz
	deadline := time.NewTimer(o.rdzvTimeout)
	defer deadline.Stop()
	retry := time.NewTicker(500 * time.Millisecond)
	defer retry.Stop()

	// A node is in the rendezvous once node 0 is among its members. A
	// successful Join is not enough: memberlist answers joins from the
	// moment it listens, before it has added itself to its own state, so
	// a join that lands in that window succeeds without learning of node
	// 0. Such a node would wait unseen by node 0's messages and leave
	// without telling it; so it joins again on every retry until node 0
	// is there.
	joined := o.nodeRank == 0
	var lastJoinErr error
	tryJoin := func() {
		if _, err := rz.ml.Join([]string{o.rdzv}); err != nil {
			lastJoinErr = err
			return
		}
		m.joinAnswered = true
		if !m.seesNodeRank(0) {
			lastJoinErr = fmt.Errorf("%s answered, but node 0 was not among its members", o.rdzv)
		}
	}
	logged := false
	if !joined {
		tryJoin()
	}
	for {
		if !joined && m.seesNodeRank(0) {
			joined = true
		}
		if joined && !logged && o.verbose {
			m.out.logf("node %d: in the rendezvous at %s, waiting for %d nodes", o.nodeRank, o.rdzv, o.nnodes)
			logged = true
		}
		for _, e := range rz.drain() {
			if e.kind == evMsg && e.msg.Type == "stop" {
				return nil, &rdzvError{code: e.msg.Code, remote: true, msg: fmt.Sprintf("node %d stopped the job during the rendezvous: %s", e.msg.From, e.msg.Reason)}
			}
		}
		if joined {
			metas, err := m.check()
			if err != nil {
				return nil, err
			}
			if metas != nil {
				return metas, nil
			}
		}
		select {
		case <-rz.notify:
		case <-retry.C:
			if !joined {
				tryJoin()
			}
		case sig := <-m.sigs:
			ss, _ := sig.(syscall.Signal)
			return nil, &rdzvError{code: 128 + int(ss), msg: fmt.Sprintf("received %v during the rendezvous", sig)}
		case <-deadline.C:
			if !joined {
				return nil, usagef("rendezvous %s unreachable for %v (is node 0 running, with the same secret?): %s", o.rdzv, o.rdzvTimeout, oneLine(lastJoinErr))
			}
			have := map[int]bool{}
			for _, n := range rz.ml.Members() {
				var nm nodeMeta
				if json.Unmarshal(n.Meta, &nm) == nil {
					have[nm.NodeRank] = true
				}
			}
			var missing []string
			for k := 0; k < o.nnodes; k++ {
				if !have[k] {
					missing = append(missing, strconv.Itoa(k))
				}
			}
			return nil, usagef("rendezvous %s: %d of %d nodes arrived within %v; missing node rank(s) %s", o.rdzv, len(have), o.nnodes, o.rdzvTimeout, strings.Join(missing, ","))
		}
	}
}

// seesNodeRank reports whether a node announcing node rank k is among this
// node's members.
func (m *multiNode) seesNodeRank(k int) bool {
	for _, n := range m.rz.ml.Members() {
		var nm nodeMeta
		if json.Unmarshal(n.Meta, &nm) == nil && nm.V == 1 && nm.NodeRank == k {
			return true
		}
	}
	return false
}

// check compares every known node's meta with this node's. It returns the
// metas when all nodes are present and agree, nil when some are missing,
// and an error when they disagree.
func (m *multiNode) check() ([]nodeMeta, error) {
	self := m.rz.self
	byRank := map[int]nodeMeta{}
	names := map[string]int{}
	for _, n := range m.rz.ml.Members() {
		var nm nodeMeta
		if err := json.Unmarshal(n.Meta, &nm); err != nil || nm.V != 1 {
			return nil, usagef("node %s at %s is not a launcher of this version (meta %q)", n.Name, n.Address(), n.Meta)
		}
		who := fmt.Sprintf("node %d (%s)", nm.NodeRank, nm.Addr)
		switch {
		case nm.NNodes != self.NNodes:
			return nil, usagef("nodes disagree on --nnodes: this node %d has %d, %s has %d", self.NodeRank, self.NNodes, who, nm.NNodes)
		case nm.NProc != self.NProc:
			return nil, usagef("nodes disagree on the world size: this node %d has -np %d (world %d), %s has -np %d (world %d)",
				self.NodeRank, self.NProc, self.NNodes*self.NProc, who, nm.NProc, nm.NNodes*nm.NProc)
		case nm.Codec != self.Codec:
			return nil, usagef("nodes disagree on the codec options: this node %d has %s, %s has %s", self.NodeRank, self.Codec, who, nm.Codec)
		case nm.NodeRank < 0 || nm.NodeRank >= self.NNodes:
			return nil, usagef("%s has --node-rank %d, outside 0..%d", who, nm.NodeRank, self.NNodes-1)
		}
		if prev, dup := byRank[nm.NodeRank]; dup {
			return nil, usagef("two nodes claim --node-rank %d: %s and %s", nm.NodeRank, prev.Addr, nm.Addr)
		}
		byRank[nm.NodeRank] = nm
		names[n.Name] = nm.NodeRank
	}
	if len(byRank) < self.NNodes {
		return nil, nil
	}
	metas := make([]nodeMeta, self.NNodes)
	for k := range metas {
		metas[k] = byRank[k]
	}
	if metas[0].Port0 == 0 {
		return nil, usagef("node 0 (%s) announced no port for global rank 0", metas[0].Addr)
	}
	m.names = names
	return metas, nil
}

// broadcast sends msg to every other node in the background; wait for it
// with m.rz.sends.
func (m *multiNode) broadcast(msg rdzvMsg) {
	b, err := json.Marshal(msg)
	if err != nil {
		m.out.logf("encode %s message: %v", msg.Type, err)
		return
	}
	self := m.rz.ml.LocalNode().Name
	var to []memberlist.Node
	for _, n := range m.rz.ml.Members() {
		if n.Name != self {
			to = append(to, *n)
		}
	}
	if m.opts.nodeRank != 0 && m.joinAnswered && !m.seesNodeRank(0) {
		// This node's join was answered before node 0 knew itself (see
		// gather), but node 0 may know this node: tell the rendezvous
		// address too.
		to = append(to, m.rdzvNode)
	}
	for _, n := range to {
		m.rz.sends.Add(1)
		go func() {
			defer m.rz.sends.Done()
			if err := m.rz.ml.SendReliable(&n, b); err != nil && m.opts.verbose {
				m.out.logf("send %s to %s: %v", msg.Type, n.Address(), err)
			}
		}()
	}
}

// pump turns rendezvous events during the job into stop requests for the
// supervisor until ctx ends.
func (m *multiNode) pump(ctx context.Context, metas []nodeMeta, remote chan<- stopRequest) {
	// The names of the nodes that met, from check: a node that left
	// since is no longer among the members, but its leave counts.
	names := m.names
	done := map[int]bool{}
	send := func(r stopRequest) {
		select {
		case remote <- r:
		default: // a stop request is already pending; the first one wins
		}
	}
	var checks sync.WaitGroup
	var timers []*time.Timer
	defer func() {
		for _, t := range timers {
			if t.Stop() {
				checks.Done()
			}
		}
		checks.Wait()
	}()
	for {
		for _, e := range m.rz.drain() {
			switch e.kind {
			case evMsg:
				switch e.msg.Type {
				case "done":
					done[e.msg.From] = true
				case "stop":
					send(stopRequest{code: e.msg.Code, reason: e.msg.Reason})
				}
			case evLeave:
				if k, ok := names[e.name]; ok && !done[k] {
					e.kind = evLeaveCheck
					checks.Add(1)
					t := time.AfterFunc(leaveGrace, func() {
						defer checks.Done()
						m.rz.push(e)
					})
					timers = append(timers, t)
				}
			case evLeaveCheck:
				if k := names[e.name]; !done[k] {
					send(stopRequest{code: exitLost, reason: fmt.Sprintf("node %d (%s) left the job or stopped responding before its ranks finished", k, metas[k].Addr)})
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-m.rz.notify:
		}
	}
}

// close leaves the rendezvous after the in-flight messages went out.
func (m *multiNode) close() {
	if m.rz == nil || m.rz.ml == nil {
		return
	}
	m.rz.sends.Wait()
	_ = m.rz.ml.Leave(500 * time.Millisecond)
	_ = m.rz.ml.Shutdown()
	m.rz.ml = nil
}

// runMulti runs this node's share of a multi-node job.
func runMulti(o *options, out *output, sigs <-chan os.Signal, path string, secret []byte) int {
	m := &multiNode{opts: o, out: out, sigs: sigs, secret: secret}
	nodeAddr, err := m.setup()
	if err != nil {
		return reportErr(out, err)
	}
	defer m.close()
	metas, err := m.gather()
	if err != nil {
		code := reportErr(out, err)
		if re, ok := err.(*rdzvError); !ok || !re.remote {
			// Tell the others why, so that they stop now rather than at
			// their own timeout.
			m.broadcast(rdzvMsg{Type: "stop", From: o.nodeRank, Code: code, Reason: fmt.Sprintf("node %d: %v", o.nodeRank, err)})
		}
		return code
	}
	join := net.JoinHostPort(metas[0].Addr, strconv.Itoa(metas[0].Port0))
	if o.verbose {
		var addrs []string
		for _, nm := range metas {
			addrs = append(addrs, fmt.Sprintf("%d=%s", nm.NodeRank, nm.Addr))
		}
		sort.Strings(addrs)
		out.logf("node %d: all %d nodes met (%s); ranks join %s", o.nodeRank, o.nnodes, strings.Join(addrs, " "), join)
	}
	layout := jobLayout{
		nnodes: o.nnodes, nodeRank: o.nodeRank, nproc: o.nproc,
		join: join, bindAddr: nodeAddr, rank0Port: metas[0].Port0,
		secretHex: o.workerSecretHex(secret),
	}
	remote := make(chan stopRequest, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var pumpDone sync.WaitGroup
	pumpDone.Add(1)
	go func() {
		defer pumpDone.Done()
		m.pump(ctx, metas, remote)
	}()
	s := &supervisor{
		opts: o, out: out, path: path, layout: layout, sigs: sigs, remote: remote,
		onStop: func(code int, reason string) {
			m.broadcast(rdzvMsg{Type: "stop", From: o.nodeRank, Code: code, Reason: reason})
		},
	}
	code := s.run()
	cancel()
	pumpDone.Wait()
	if code == 0 {
		m.broadcast(rdzvMsg{Type: "done", From: o.nodeRank})
	}
	return code
}

// oneLine flattens a multi-line error (memberlist returns multierrors).
func oneLine(err error) string {
	if err == nil {
		return "no answer"
	}
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "* "))
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
