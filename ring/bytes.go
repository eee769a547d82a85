package ring

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Byte collectives (AllGather, Broadcast) move opaque payloads in pieces of
// at most Ring.ChunkBytes bytes. The first piece of every payload travels in
// a first engine run, the way a single message used to: an 8-byte length
// header, then up to ChunkBytes-8 bytes. Payloads that fit (every rank
// learns every length from that run) are done after it; otherwise a second
// run, under the same Op, sends the remaining pieces (Sub 1, 2, ...), each
// forwarded by the next rank as soon as it arrives, so a payload of any size
// streams through the ring in pieces.
const (
	// DefaultChunkBytes is the default of Ring.ChunkBytes.
	DefaultChunkBytes = 1 << 20
	// MinChunkBytes is the smallest Ring.ChunkBytes.
	MinChunkBytes = 16
	// maxPieces bounds the pieces of one byte collective (all ranks'
	// payloads together: 64 GiB at the default ChunkBytes), so that a length
	// announced by a peer cannot size the step lists beyond a few MB.
	maxPieces   = 1 << 16
	pieceHeader = 8
)

func (r *Ring) chunkBytes() int {
	if r.ChunkBytes > 0 {
		return r.ChunkBytes
	}
	return DefaultChunkBytes
}

// bytesJob moves opaque byte pieces: a send step that waits forwards the
// piece received for the paired receive step; any other sends piece Sub of
// this rank's payload (own). A received piece goes to store.
type bytesJob struct {
	sends, recvs []step
	own          func(k int) []byte
	store        func(origin, k int, b []byte) error
}

func (j *bytesJob) build(i int, in []byte, inSum uint32) ([]byte, uint32, error) {
	if j.sends[i].wait {
		return in, inSum, nil // forwarded with the checksum it arrived with
	}
	return j.own(int(j.sends[i].sub)), 0, nil
}

// consume stores a piece; the job keeps every payload (it is forwarded or
// becomes part of the result).
func (j *bytesJob) consume(i int, m Message) (bool, uint32, error) {
	s := j.recvs[i]
	return true, m.Sum, j.store(int(s.chunk), int(s.sub), m.Payload)
}

// pieceBound is the engine's recvMax for a byte collective: no piece is
// larger than the ring's chunk size, so a link refuses a longer frame from
// its header.
func pieceBound(c int) func(int) int { return func(int) int { return c } }

// payloadPieces describes how a payload of length n is cut with chunk c.
type payloadPieces struct{ n, c int }

// count returns the number of pieces (at least 1).
func (p payloadPieces) count() int {
	first := p.c - pieceHeader
	if p.n <= first {
		return 1
	}
	return 1 + (p.n-first+p.c-1)/p.c
}

// bounds returns the byte range [a, b) of piece k >= 1.
func (p payloadPieces) bounds(k int) (int, int) {
	a := p.c - pieceHeader + (k-1)*p.c
	return a, min(p.n, a+p.c)
}

// firstPiece returns piece 0 of data: the length header and the first
// bytes.
func firstPiece(data []byte, c int) []byte {
	head := data[:min(len(data), c-pieceHeader)]
	b := make([]byte, pieceHeader, pieceHeader+len(head))
	binary.LittleEndian.PutUint64(b, uint64(len(data)))
	return append(b, head...)
}

// parseFirst checks piece 0 from rank from and returns the payload length
// and the first bytes.
func parseFirst(rank, from int, b []byte, c int) (int, []byte, error) {
	if len(b) < pieceHeader {
		return 0, nil, fmt.Errorf("%w: rank %d got a %d-byte first piece from rank %d", ErrProtocol, rank, len(b), from)
	}
	n := binary.LittleEndian.Uint64(b)
	head := b[pieceHeader:]
	if n > uint64(maxPieces)*uint64(c) || uint64(len(head)) != min(n, uint64(c-pieceHeader)) {
		return 0, nil, fmt.Errorf("%w: rank %d got a first piece of %d bytes for a payload of %d bytes from rank %d (ChunkBytes %d)",
			ErrProtocol, rank, len(b), n, from, c)
	}
	return int(n), head, nil
}

// checkPiece checks that piece k of a payload of n bytes has the right
// length.
func checkPiece(rank, from, origin, k int, b []byte, p payloadPieces) error {
	a, e := p.bounds(k)
	if len(b) != e-a {
		return fmt.Errorf("%w: rank %d got %d bytes from rank %d for piece %d of rank %d's payload, want %d",
			ErrProtocol, rank, len(b), from, k, origin, e-a)
	}
	return nil
}

// AllGather collects one byte slice from every rank: out[i] is rank i's
// local. Slices may differ in length and have no size limit: they travel
// in pieces of at most Ring.ChunkBytes, pipelined (see bytes.go).
func (r *Ring) AllGather(ctx context.Context, op uint64, local []byte) ([][]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	out := make([][]byte, r.Size)
	out[r.Rank] = append([]byte(nil), local...)
	if r.Size == 1 {
		return out, nil
	}
	n, rk, c := r.Size, r.Rank, r.chunkBytes()
	mod := func(x int) uint32 { return uint32(((x % n) + n) % n) }
	lens := make([]int, n)
	lens[rk] = len(local)
	from := (rk - 1 + n) % n

	// Run 1: piece 0 of every payload.
	j := &bytesJob{own: func(int) []byte { return firstPiece(local, c) }}
	j.store = func(origin, _ int, b []byte) error {
		ln, head, err := parseFirst(rk, from, b, c)
		if err != nil {
			return err
		}
		lens[origin] = ln
		out[origin] = append([]byte(nil), head...)
		return nil
	}
	for s := 0; s < n-1; s++ {
		j.sends = append(j.sends, step{kind: KindBytes, hop: uint32(s), chunk: mod(rk - s), wait: s > 0})
		j.recvs = append(j.recvs, step{kind: KindBytes, hop: uint32(s), chunk: mod(rk - s - 1)})
	}
	if err := (&engine{r: r, op: op, sends: j.sends, recvs: j.recvs, job: j, recvMax: pieceBound(c)}).run(ctx, nil); err != nil {
		return nil, err
	}

	// Run 2, when some payload did not fit in its first piece: the rest,
	// piece by piece. Every rank knows every length now, so every rank
	// makes the same decision.
	total := 0
	for _, ln := range lens {
		total += payloadPieces{ln, c}.count() - 1
	}
	if total == 0 {
		return out, nil
	}
	if total > maxPieces {
		return nil, fmt.Errorf("ring: op %d: allgather of %d pieces of at most %d bytes exceeds %d pieces", op, total, c, maxPieces)
	}
	j2 := &bytesJob{own: func(k int) []byte {
		a, e := payloadPieces{len(local), c}.bounds(k)
		return local[a:e]
	}}
	j2.store = func(origin, k int, b []byte) error {
		if err := checkPiece(rk, from, origin, k, b, payloadPieces{lens[origin], c}); err != nil {
			return err
		}
		out[origin] = append(out[origin], b...)
		return nil
	}
	for s := 0; s < n-1; s++ {
		o, o2 := mod(rk-s), mod(rk-s-1)
		for k := 1; k < (payloadPieces{lens[o], c}).count(); k++ {
			j2.sends = append(j2.sends, step{kind: KindBytes, hop: uint32(s), chunk: o, sub: uint32(k), wait: s > 0})
		}
		for k := 1; k < (payloadPieces{lens[o2], c}).count(); k++ {
			j2.recvs = append(j2.recvs, step{kind: KindBytes, hop: uint32(s), chunk: o2, sub: uint32(k)})
		}
	}
	if err := (&engine{r: r, op: op, sends: j2.sends, recvs: j2.recvs, job: j2, recvMax: pieceBound(c)}).run(ctx, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// Broadcast sends root's data to every rank and returns it (on root, data
// itself; the other ranks' data is ignored). The payload travels the ring
// from root to root-1 in pieces of at most Ring.ChunkBytes, each forwarded
// as soon as it arrives, so it has no size limit (see bytes.go).
func (r *Ring) Broadcast(ctx context.Context, op uint64, data []byte, root int) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	var pre error
	if root < 0 || root >= r.Size {
		pre = fmt.Errorf("ring: broadcast root %d out of range [0, %d)", root, r.Size)
	}
	if r.Size == 1 {
		if pre != nil {
			return nil, fmt.Errorf("rank 0: %w", pre)
		}
		return data, nil
	}
	rk, c := r.Rank, r.chunkBytes()
	from := (rk - 1 + r.Size) % r.Size
	last := (root - 1 + r.Size) % r.Size
	// chain returns the step lists of piece k of the payload: root sends,
	// the ranks after it receive and (but the last) forward.
	chain := func(j *bytesJob, k int) {
		b := step{kind: KindBytes, chunk: uint32(root), sub: uint32(k)}
		if rk != root {
			j.recvs = append(j.recvs, b)
		}
		if rk != last {
			b.wait = rk != root
			j.sends = append(j.sends, b)
		}
	}
	length := len(data)
	var result []byte
	j := &bytesJob{own: func(int) []byte { return firstPiece(data, c) }}
	j.store = func(_, _ int, b []byte) error {
		ln, head, err := parseFirst(rk, from, b, c)
		if err != nil {
			return err
		}
		length = ln
		result = append([]byte(nil), head...)
		return nil
	}
	if pre == nil {
		chain(j, 0)
	}
	if err := (&engine{r: r, op: op, sends: j.sends, recvs: j.recvs, job: j, recvMax: pieceBound(c)}).run(ctx, pre); err != nil {
		return nil, err
	}
	p := payloadPieces{length, c}
	if p.count() > 1 {
		j2 := &bytesJob{own: func(k int) []byte {
			a, e := p.bounds(k)
			return data[a:e]
		}}
		j2.store = func(_, k int, b []byte) error {
			if err := checkPiece(rk, from, root, k, b, p); err != nil {
				return err
			}
			result = append(result, b...)
			return nil
		}
		if p.count() > maxPieces {
			return nil, fmt.Errorf("ring: op %d: broadcast of %d bytes in pieces of at most %d exceeds %d pieces", op, length, c, maxPieces)
		}
		for k := 1; k < p.count(); k++ {
			chain(j2, k)
		}
		if err := (&engine{r: r, op: op, sends: j2.sends, recvs: j2.recvs, job: j2, recvMax: pieceBound(c)}).run(ctx, nil); err != nil {
			return nil, err
		}
	}
	if rk == root {
		return data, nil
	}
	return result, nil
}
