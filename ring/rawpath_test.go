package ring_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// TestRawPathMatchesRawCodec: the raw data path (GradCodec "raw", moved by
// the ring itself) gives bit for bit the result of ringtest's RawCodec (which
// goes through Encode/Decode), on every rank, for ring sizes 1-6, lengths
// that do and do not divide evenly, with and without Average.
func TestRawPathMatchesRawCodec(t *testing.T) {
	for size := 1; size <= 6; size++ {
		for _, n := range []int{0, 1, 7, 1000, 4099} {
			for _, avg := range []bool{false, true} {
				t.Run(fmt.Sprintf("size%d/n%d/avg%v", size, n, avg), func(t *testing.T) {
					in := inputsFor(size, n, uint64(77*size+n))
					want := make([][]float32, size)
					for r := range in {
						want[r] = append([]float32(nil), in[r]...)
					}
					for r, err := range allReduce(t, ringtest.NewNetwork(size), want, func(int) ring.Options {
						return ring.Options{Op: 1, Average: avg, Codec: &ringtest.RawCodec{}, SubChunkValues: 100}
					}) {
						if err != nil {
							t.Fatalf("RawCodec rank %d: %v", r, err)
						}
					}
					codecs := make([]*ring.GradCodec, size)
					for r := range codecs {
						codecs[r] = newGradCodec(t, "raw", true)
					}
					for r, err := range allReduce(t, ringtest.NewNetwork(size), in, func(r int) ring.Options {
						return ring.Options{Op: 1, Average: avg, Codec: codecs[r], SubChunkValues: 100}
					}) {
						if err != nil {
							t.Fatalf("raw path rank %d: %v", r, err)
						}
					}
					checkIdentical(t, in)
					if hash(in[0]) != hash(want[0]) {
						t.Fatal("raw path result differs from RawCodec's")
					}
				})
			}
		}
	}
}

// TestRawPathNonFinite: NaN or Inf in any rank's input, or a sum that
// overflows to Inf, fails every rank with gradcodec.ErrNonFinite naming the
// rank whose values made it non-finite.
func TestRawPathNonFinite(t *testing.T) {
	const size, n = 4, 1000
	for _, tc := range []struct {
		name string
		rank int
		v    float32
	}{
		{"nan", 2, float32(math.NaN())},
		{"inf", 0, float32(math.Inf(-1))},
		{"overflow", 3, math.MaxFloat32},
	} {
		for _, at := range []int{10, 600, 999} { // in different ranks' chunks
			t.Run(fmt.Sprintf("%s/at%d", tc.name, at), func(t *testing.T) {
				in := inputsFor(size, n, 5)
				in[tc.rank][at] = tc.v
				if tc.name == "overflow" {
					in[(tc.rank+size-1)%size][at] = math.MaxFloat32 // the predecessor's partial sum
				}
				codecs := make([]*ring.GradCodec, size)
				for r := range codecs {
					codecs[r] = newGradCodec(t, "raw", false)
				}
				errs := allReduce(t, ringtest.NewNetwork(size), in, func(r int) ring.Options {
					return ring.Options{Op: 1, Codec: codecs[r], SubChunkValues: 64}
				})
				want := fmt.Sprintf("failed on rank %d", tc.rank)
				if tc.name == "overflow" {
					// Both ranks hold MaxFloat32: the sum overflows on
					// whichever of them adds the other's partial sum.
					want = "failed on rank"
				}
				sameError(t, errs, gradcodec.ErrNonFinite, want)
			})
		}
	}
}

// boundLink records the bounds the ring passes to RecvLimit and the
// payloads it recycles; it checks Message.Sum like a real link would.
type boundLink struct {
	ring.Link
	mu       sync.Mutex
	bounds   []int
	lens     []int
	recycled int
}

func (l *boundLink) RecvLimit(ctx context.Context, max int) (ring.Message, error) {
	m, err := l.Link.Recv(ctx)
	if err != nil {
		return m, err
	}
	l.mu.Lock()
	l.bounds = append(l.bounds, max)
	l.lens = append(l.lens, len(m.Payload))
	l.mu.Unlock()
	if m.Sum != 0 && crc32.Checksum(m.Payload, crc32.MakeTable(crc32.Castagnoli)) != m.Sum {
		return m, fmt.Errorf("boundLink: %w: checksum", gradcodec.ErrBadFrame)
	}
	if len(m.Payload) > max {
		return m, fmt.Errorf("boundLink: %w: %d bytes over the bound %d", gradcodec.ErrBadFrame, len(m.Payload), max)
	}
	return m, nil
}

func (l *boundLink) Recycle(p []byte) {
	l.mu.Lock()
	l.recycled++
	l.mu.Unlock()
}

// TestRawPathBoundsAndSums: over a LimitedLink the ring bounds every
// message by what it expects (a raw sub-chunk's exact size, at least a
// status message's), every data message carries a correct Message.Sum, and
// every consumed raw payload is handed back for reuse.
func TestRawPathBoundsAndSums(t *testing.T) {
	const size, n, sub = 3, 3000, 256
	net := ringtest.NewNetwork(size)
	links := make([]*boundLink, size)
	rings := make([]*ring.Ring, size)
	for r := range rings {
		rings[r] = net.Ring(r)
		links[r] = &boundLink{Link: rings[r].Prev}
		rings[r].Prev = links[r]
	}
	in := inputsFor(size, n, 9)
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		c, err := ring.NewGradCodec(gradcodec.Options{Codec: "raw"}, false)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = rings[r].AllReduce(ctx, in[r], ring.Options{Op: 1, Codec: c, SubChunkValues: sub})
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkIdentical(t, in)
	for r, l := range links {
		data := 0
		for i, b := range l.bounds {
			if l.lens[i] > b {
				t.Errorf("rank %d message %d: %d bytes over the bound %d", r, i, l.lens[i], b)
			}
			if b > 4*sub+8<<10 {
				t.Errorf("rank %d message %d: bound %d, more than a %d-value sub-chunk or a status message", r, i, b, sub)
			}
			if l.lens[i] > 64 {
				data++
			}
		}
		if l.recycled != data {
			t.Errorf("rank %d: %d data payloads recycled, %d received", r, l.recycled, data)
		}
	}
}
