package ring_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// smallChunk is the message limit of the multi-message tests: every payload
// longer than 56 bytes needs several messages.
const smallChunk = 64

func randBytes(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// TestBytesCollectivesManyMessages runs AllGather and Broadcast with the
// links' message limit lowered to smallChunk bytes (a larger message is
// refused), so payloads travel as many pipelined pieces; lengths around the
// piece boundaries and far beyond, world sizes 1-8, and a second round of
// the same ops afterwards to show the links are clean.
func TestBytesCollectivesManyMessages(t *testing.T) {
	base := runtime.NumGoroutine()
	lengths := []int{0, 1, 55, 56, 57, 64, 120, 121, 1000, 4099}
	for size := 1; size <= 8; size++ {
		net := ringtest.NewNetwork(size)
		net.SetMaxPayload(smallChunk)
		rings := make([]*ring.Ring, size)
		for r := range rings {
			rings[r] = net.Ring(r)
			rings[r].ChunkBytes = smallChunk
		}
		op := uint64(0)
		for rep := 0; rep < 2; rep++ {
			op++
			local := func(r int) []byte { return randBytes(uint64(size*100+r+rep), lengths[(r+rep*3)%len(lengths)]) }
			outs := make([][][]byte, size)
			errs := runRanks(t, size, func(ctx context.Context, r int) error {
				var err error
				outs[r], err = rings[r].AllGather(ctx, op, local(r))
				return err
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("size %d allgather rank %d: %v", size, r, err)
				}
				for i, b := range outs[r] {
					if !bytes.Equal(b, local(i)) {
						t.Fatalf("size %d rank %d: out[%d] has %d bytes, want %d (or differs)", size, r, i, len(b), len(local(i)))
					}
				}
			}
			for _, n := range []int{0, 56, 57, 5000} {
				root := (n + rep) % size
				op++
				want := randBytes(uint64(n), n)
				got := make([][]byte, size)
				errs := runRanks(t, size, func(ctx context.Context, r int) error {
					var data []byte
					if r == root {
						data = want
					}
					var err error
					got[r], err = rings[r].Broadcast(ctx, op, data, root)
					return err
				})
				for r, err := range errs {
					if err != nil || !bytes.Equal(got[r], want) {
						t.Fatalf("size %d broadcast of %d bytes from %d: rank %d got %d bytes, %v", size, n, root, r, len(got[r]), err)
					}
				}
			}
		}
	}
	noLeak(t, base)
}

// TestBytesOverLimitRefused: the lowered limit is real — with pieces larger
// than the links take, the collective fails on every rank, naming the
// limit, instead of hanging.
func TestBytesOverLimitRefused(t *testing.T) {
	const size = 3
	net := ringtest.NewNetwork(size)
	net.SetMaxPayload(smallChunk)
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		rg := net.Ring(r)
		rg.ChunkBytes = 4 * smallChunk
		_, err := rg.Broadcast(ctx, 1, make([]byte, 1000), 0)
		return err
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "over the limit") {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if !errors.Is(errs[0], ringtest.ErrRefused) {
		t.Fatalf("rank 0: %v", errs[0])
	}
	// A ChunkBytes too small for the length header is an argument error.
	rg := net.Ring(0)
	rg.ChunkBytes = 8
	if _, err := rg.AllGather(context.Background(), 2, nil); err == nil || !strings.Contains(err.Error(), "ChunkBytes") {
		t.Fatalf("ChunkBytes 8: %v", err)
	}
}

// TestBytesPieceFaults: a corrupted or dropped piece of a multi-message
// payload fails the collective on every rank with the same error.
func TestBytesPieceFaults(t *testing.T) {
	for name, action := range map[string]ringtest.Action{"drop": ringtest.Drop, "cut": ringtest.CutSender} {
		t.Run(name, func(t *testing.T) {
			const size = 4
			net := ringtest.NewNetwork(size)
			net.AddFault(ringtest.Fault{From: 1, Kind: ring.KindBytes, Nth: 6, Action: action})
			errs := runRanks(t, size, func(ctx context.Context, r int) error {
				rg := net.Ring(r)
				rg.ChunkBytes = smallChunk
				_, err := rg.AllGather(ctx, 1, randBytes(uint64(r), 700))
				return err
			})
			if !net.Fired() {
				t.Fatal("fault did not fire")
			}
			for r, err := range errs {
				if err == nil {
					t.Fatalf("rank %d: no error", r)
				}
				if action == ringtest.Drop && !errors.Is(err, ring.ErrProtocol) {
					t.Fatalf("rank %d: %v, want ErrProtocol", r, err)
				}
			}
			if action == ringtest.Drop {
				sameError(t, errs, ring.ErrProtocol, "failed on rank 2")
			}
		})
	}
}
