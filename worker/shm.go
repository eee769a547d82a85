package worker

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Shared memory between the two ranks of a link on one host.
//
// Over loopback TCP every payload byte is copied twice by the kernel (into
// a socket buffer, out into the receiver's buffer), and the receiver then
// reads its copy once more to add it into its tensor. When both ends of a
// link run on the same host — the same kernel (boot id), network namespace
// and PID namespace — the receiving rank (the dialer) offers a shared
// memory ring in its upgrade request: a sealed memfd the sender opens
// through /proc/<pid>/fd/<n> and maps. The sender then copies a payload
// into the ring and sends only its frame header and the payload's position
// over the websocket; the receiver checks the payload in the ring (the
// header's checksum, as for any frame) and hands the ring's memory itself
// to the ring algorithm, which adds from it and recycles it. One copy
// instead of two, no socket buffers, and the reduce-scatter's add reads
// the payload where the sender wrote it.
//
// The websocket keeps everything else: authentication (the offer is bound
// into the upgrade's HMAC), sequence numbers, the job id, checksums,
// liveness, close reasons. A payload that does not fit the ring's free
// space (the receiver still holds earlier ones) goes over the socket as
// before, so a receiver that holds payloads can never stall its sender.
//
// Layout of the memfd: a control page, then the data ring.
//
//	0   released uint64: stream position up to which the receiver is done
//	8   magic "VCCLSHM1"
//	16  token, 16 random bytes (also in the offer: the sender checks it)
//	4096 data ring (Config.SharedMemBytes bytes)
//
// Payloads sit at 64-byte aligned stream positions; the position of a
// payload modulo the ring size is its offset, and one that would wrap
// starts at the ring's beginning instead (the skipped tail counts as used
// until the payload before it is released). A payload sent when the
// receiver has released everything starts a new lap (offset 0), so a
// link that carries one message at a time keeps reusing warm memory. The
// receiver mirrors the sender's positions and refuses a frame at any
// other: the next position, or, while it holds nothing, a new lap.
//
// Trust: the payload is checked where it lies and read there afterwards
// (the reduce-scatter's add, a codec's decode), so a peer could change it
// between the check and the use. Only a peer that holds the job secret
// gets the ring, and such a peer can send wrong data with right checksums
// over the socket just as well: the checksums guard against damage, not
// against the job's own ranks.
const (
	shmCtrl  = 4096
	shmAlign = 64
	// DefaultSharedMemBytes is the size of a link's shared-memory ring
	// when Config.SharedMemBytes is 0. A reduce-scatter's first hop sends
	// a whole ring chunk at once (16 MiB of a 64 MiB tensor on 4 ranks);
	// with 16 MiB a 64 MiB raw allreduce sent 8-18% of its payloads over
	// the socket for want of space and took 61-62 ms, with 32 MiB none and
	// 50-53 ms (4 ranks, 2 CPUs; 8 MiB: 70 ms).
	DefaultSharedMemBytes = 32 << 20
	// shmMinPayload is the smallest payload sent through shared memory;
	// smaller ones (status messages, tiny chunks) stay on the socket, in
	// the same write as their header.
	shmMinPayload = 16 << 10
	// The sizes a ring may have (Config.SharedMemBytes).
	minSharedMemBytes = 16 * shmMinPayload
	maxSharedMemBytes = 1 << 30
)

var shmMagic = [8]byte{'V', 'C', 'C', 'L', 'S', 'H', 'M', '1'}

// errShmElsewhere reports an offer from another host (or namespace): not
// an error, the link just uses the socket.
var errShmElsewhere = errors.New("the peer runs on another host or namespace")

// errNoShm reports a process that cannot offer shared memory at all (not
// Linux, or /proc unreadable): not worth a log line per link.
var errNoShm = errors.New("no shared memory on this system")

// shmRegion is one mapping of a link's memfd.
type shmRegion struct {
	mem      []byte         // the whole mapping
	data     []byte         // the ring: mem[shmCtrl:]
	released *atomic.Uint64 // in the control page
	unmap    func() error
}

func newShmRegion(mem []byte, unmap func() error) *shmRegion {
	return &shmRegion{
		mem:      mem,
		data:     mem[shmCtrl:],
		released: (*atomic.Uint64)(unsafe.Pointer(&mem[0])),
		unmap:    unmap,
	}
}

// shmAligned rounds n up to shmAlign.
func shmAligned(n int) uint64 { return uint64(n+shmAlign-1) &^ (shmAlign - 1) }

// shmPlace returns the stream position at which a payload of n aligned
// bytes goes after position head in a ring of size bytes: head itself, or
// the start of the next lap when it would wrap.
func shmPlace(head, n, size uint64) uint64 {
	if off := head % size; off+n > size {
		return head + size - off
	}
	return head
}

// shmLapStart returns the first position at or after head that starts a
// lap of a ring of size bytes (offset 0). A payload sent while nothing is
// in flight goes there: it reuses the lines the last payloads left in the
// caches, instead of walking the whole ring into cold memory one message
// at a time.
func shmLapStart(head, size uint64) uint64 { return (head + size - 1) / size * size }

// shmTx is the sending end of a link's shared memory. It is used under
// the link's wmu.
type shmTx struct {
	r    *shmRegion
	head uint64 // stream position after the last payload written
	// floor is where the last new lap began: everything before it was
	// released then (the receiver publishes it only with its next release).
	floor uint64
}

// put copies p into the ring and returns its stream position, or false
// when p is larger than a quarter of the ring or does not fit the space
// the receiver has released (p then goes over the socket).
func (t *shmTx) put(p []byte) (uint64, bool) {
	size := uint64(len(t.r.data))
	n := shmAligned(len(p))
	if n > size/4 {
		return 0, false
	}
	var start uint64
	if rel := max(t.r.released.Load(), t.floor); rel == t.head {
		// Everything sent is released, so the receiver holds nothing.
		start = shmLapStart(t.head, size)
		t.floor = start
	} else {
		start = shmPlace(t.head, n, size)
		if start+n-rel > size {
			return 0, false
		}
	}
	off := start % size
	copy(t.r.data[off:off+uint64(len(p))], p)
	t.head = start + n
	return start, true
}

// shmRx is the receiving end of a link's shared memory: the reader takes
// payloads out of the ring in stream order, Recycle releases them in any
// order, and the sender learns the position up to which everything is
// released.
type shmRx struct {
	r *shmRegion

	mu     sync.Mutex
	head   uint64     // stream position after the last payload taken
	out    []shmEntry // taken and not yet fully released, in stream order
	closed bool       // the link has shut down: unmap once out is empty
	gone   bool       // unmapped
}

// shmEntry is one payload handed out of the ring.
type shmEntry struct {
	start, end uint64
	addr       uintptr // of its first byte, to recognise it in Recycle
	done       bool
}

// take returns the payload of n bytes the sender announced at stream
// position start, as the ring's own memory (capacity n). A position other
// than the one the sender must have used is an error (a bad frame).
func (x *shmRx) take(start uint64, n int) ([]byte, error) {
	size := uint64(len(x.r.data))
	an := shmAligned(n)
	x.mu.Lock()
	defer x.mu.Unlock()
	if an > size/4 || n < shmMinPayload {
		return nil, fmt.Errorf("shared-memory payload of %d bytes outside %d..%d (a quarter of the %d-byte ring)", n, shmMinPayload, size/4, size)
	}
	want := shmPlace(x.head, an, size)
	// With nothing out, the sender may also have started a new lap (if it
	// saw the last release in time).
	if start != want && (len(x.out) > 0 || start != shmLapStart(x.head, size)) {
		return nil, fmt.Errorf("shared-memory payload at stream position %d, expected %d", start, want)
	}
	first := start // with nothing out the whole ring is free
	if len(x.out) > 0 {
		first = x.out[0].start
	}
	if start+an-first > size {
		return nil, fmt.Errorf("shared-memory payload at %d overwrites unreleased data from %d", start, first)
	}
	x.head = start + an
	off := start % size
	p := x.r.data[off : off+uint64(n) : off+uint64(n)]
	x.out = append(x.out, shmEntry{start: start, end: start + an, addr: uintptr(unsafe.Pointer(&p[0]))})
	return p, nil
}

// owns reports whether p is memory of the ring (while it is mapped: the
// heap may reuse those addresses afterwards).
func (x *shmRx) owns(p []byte) bool {
	if cap(p) == 0 {
		return false
	}
	x.mu.Lock()
	gone := x.gone
	x.mu.Unlock()
	if gone {
		return false
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	base := uintptr(unsafe.Pointer(&x.r.data[0]))
	return a >= base && a < base+uintptr(len(x.r.data))
}

// release marks the payload p (from take) as done and publishes the
// position up to which every payload is done. It reports whether p was
// memory of the ring.
func (x *shmRx) release(p []byte) bool {
	if !x.owns(p) {
		return false
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range x.out {
		if x.out[i].addr == a && !x.out[i].done {
			x.out[i].done = true
			break
		}
	}
	k := 0
	for k < len(x.out) && x.out[k].done {
		k++
	}
	if k > 0 {
		x.out = append(x.out[:0], x.out[k:]...)
		rel := x.head
		if len(x.out) > 0 {
			rel = x.out[0].start
		}
		if !x.gone {
			x.r.released.Store(rel)
		}
	}
	x.unmapIfIdle()
	return true
}

// close marks the link shut down: the mapping goes as soon as no payload
// taken from it is still in use (at once when none is).
func (x *shmRx) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.closed = true
	x.unmapIfIdle()
}

// unmapIfIdle unmaps a closed ring that nobody reads any more (x.mu held).
func (x *shmRx) unmapIfIdle() {
	if x.closed && !x.gone && len(x.out) == 0 {
		x.gone = true
		x.r.unmap()
	}
}

// localAddr reports whether host:port addr names this host in this
// network namespace (a loopback address or one of its interfaces'): only
// a peer there can take a shared-memory offer, so no other is sent one
// (the offer names a boot id, a pid and a descriptor).
func localAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
