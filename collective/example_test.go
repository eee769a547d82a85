package collective_test

import (
	"context"
	"fmt"
	"log"

	"github.com/vccl/vccl/collective"
)

// A single rank needs no network: every collective is the identity, and the
// program runs unchanged under the launcher with more ranks.
func Example() {
	ctx := context.Background()
	c, err := collective.Init(ctx, collective.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	grad := []float32{0.5, -1, 2, 0.25}
	st, err := c.AllReduce(ctx, grad, collective.WithAverage(), collective.WithShape(2, 2))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("rank %d of %d: %v (%d values)\n", c.Rank(), c.Size(), grad, st.Values)
	// Output: rank 0 of 1: [0.5 -1 2 0.25] (4 values)
}

// A DDP-style training step: register the gradients once, mark each ready
// as the backward pass produces it, wait at the end of the step.
func ExampleBucketer() {
	ctx := context.Background()
	c, err := collective.Init(ctx, collective.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	w := make([]float32, 64*32) // a 64×32 weight gradient
	bias := make([]float32, 32)
	b, err := collective.NewBucketer(c, []collective.Tensor{
		{Name: "fc.weight", Rows: 64, Cols: 32, Grad: w},
		{Name: "fc.bias", Rows: 1, Cols: 32, Grad: bias},
	}, collective.BucketOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for step := 0; step < 2; step++ {
		for i := range w {
			w[i] = float32(step)
		}
		// Backward produces the last layer's gradients first.
		if err := b.MarkReady(1); err != nil {
			log.Fatal(err)
		}
		if err := b.MarkReady(0); err != nil {
			log.Fatal(err)
		}
		if _, err := b.Wait(ctx); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(b.Buckets()[0].Tensors, w[0], c.Stats().Calls)
	// Output: [fc.bias fc.weight] 1 2
}
