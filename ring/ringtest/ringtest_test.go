package ringtest

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

func TestLinkOrderAndCapacity(t *testing.T) {
	n := NewNetwork(2)
	n.SetCapacity(2)
	r0, r1 := n.Ring(0), n.Ring(1)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := r0.Next.Send(ctx, ring.Message{Op: uint64(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// The link is full: a third Send blocks until its context ends.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := r0.Next.Send(short, ring.Message{Op: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("send on a full link: %v", err)
	}
	for i := 0; i < 2; i++ {
		m, err := r1.Prev.Recv(ctx)
		if err != nil || m.Op != uint64(i) || m.Payload[0] != byte(i) {
			t.Fatalf("recv %d: %+v %v", i, m, err)
		}
	}
	if _, err := r1.Prev.Recv(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("recv on an empty link: %v", err)
	}
}

func TestCutAndFaults(t *testing.T) {
	n := NewNetwork(3)
	ctx := context.Background()
	n.AddFault(Fault{From: 0, Nth: 1, Action: Corrupt})
	n.AddFault(Fault{From: 0, Nth: 2, Action: Drop})
	for i := 0; i < 4; i++ {
		if err := n.Ring(0).Next.Send(ctx, ring.Message{Op: uint64(i), Payload: []byte{1, 2, 3}}); err != nil {
			t.Fatal(err)
		}
	}
	if !n.Fired() {
		t.Fatal("faults did not fire")
	}
	var ops []uint64
	for i := 0; i < 3; i++ {
		m, err := n.Ring(1).Prev.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, m.Op)
		if (m.Op == 1) == (m.Payload[1] == 2) {
			t.Fatalf("message %d payload %v: corruption wrong", m.Op, m.Payload)
		}
	}
	if ops[0] != 0 || ops[1] != 1 || ops[2] != 3 {
		t.Fatalf("received ops %v, want [0 1 3] (2 dropped)", ops)
	}
	n.Cut(1)
	var pl *ring.PeerLostError
	if err := n.Ring(0).Next.Send(ctx, ring.Message{}); !errors.As(err, &pl) || pl.Rank != 1 {
		t.Fatalf("send to the cut rank: %v", err)
	}
	if _, err := n.Ring(2).Prev.Recv(ctx); !errors.As(err, &pl) || pl.Rank != 1 {
		t.Fatalf("recv from the cut rank: %v", err)
	}
	if err := n.Ring(2).Next.Send(ctx, ring.Message{}); err != nil {
		t.Fatalf("link 2->0 should be intact: %v", err)
	}
}

func TestDelay(t *testing.T) {
	n := NewNetwork(2)
	n.Delay(0, 20*time.Millisecond)
	start := time.Now()
	if err := n.Ring(0).Next.Send(context.Background(), ring.Message{Op: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Ring(1).Prev.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("delivered after %v, want >= 20ms", d)
	}
}

func TestCodecs(t *testing.T) {
	src := make([]float32, 1000)
	for i := range src {
		src[i] = float32(math.Sin(float64(i))) * 3
	}
	pieces := []gradcodec.Shape{{Rows: 10, Cols: 90}, {Rows: 1, Cols: 100}}
	for _, c := range []ring.Codec{&RawCodec{}, &QuantCodec{}} {
		recon := make([]float32, len(src))
		wire, err := c.Encode("s", src, pieces, recon)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(src))
		if err := c.Decode(got, wire); err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for i := range got {
			if got[i] != recon[i] {
				t.Fatalf("%T: decode differs from recon at %d", c, i)
			}
			num += float64(got[i]-src[i]) * float64(got[i]-src[i])
			den += float64(src[i]) * float64(src[i])
		}
		if _, raw := c.(*RawCodec); (raw && num != 0) || num/den > 1e-4 {
			t.Fatalf("%T: NMSE %g", c, num/den)
		}
		wire[len(wire)/2] ^= 1
		if err := c.Decode(got, wire); !errors.Is(err, gradcodec.ErrBadFrame) {
			t.Fatalf("%T corrupted: %v", c, err)
		}
		if _, err := c.Encode("s", src, pieces[:1], recon); !errors.Is(err, gradcodec.ErrShapeMismatch) {
			t.Fatalf("%T wrong pieces: %v", c, err)
		}
		src[3] = float32(math.Inf(-1))
		if _, err := c.Encode("s", src, pieces, recon); !errors.Is(err, gradcodec.ErrNonFinite) {
			t.Fatalf("%T Inf: %v", c, err)
		}
		src[3] = 0
	}
}
