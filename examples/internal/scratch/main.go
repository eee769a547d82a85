package main

import (
	"flag"
	"fmt"

	"github.com/vccl/vccl/examples/internal/mlp"
)

func main() {
	seed := flag.Uint64("seed", 1, "")
	norm := flag.Bool("norm", false, "")
	flag.Parse()
	train, test, _ := mlp.LoadMNIST("")
	const batch = 256
	m, _ := mlp.New(mlp.DefaultSizes, *seed, 1000)
	lab := make([]uint8, 1000)
	fix := func(x []float32) {
		if *norm {
			for i := range x {
				x[i] = (x[i] - 0.1307) / 0.3081
			}
		}
	}
	for ep := 1; ep <= 3; ep++ {
		idx, _ := mlp.Shard(train.N, 0, 1, *seed, ep)
		for s := 0; s < len(idx); s += batch {
			b := idx[s:min(s+batch, len(idx))]
			train.Fill(m.Input(len(b)), lab[:len(b)], b)
			fix(m.Input(len(b)))
			m.Forward(len(b))
			m.Backward(lab[:len(b)], nil)
			m.Step(0.1, 0.9)
		}
		correct := 0
		all := make([]int, test.N)
		for i := range all {
			all[i] = i
		}
		for s := 0; s < test.N; s += 1000 {
			test.Fill(m.Input(1000), lab, all[s:s+1000])
			fix(m.Input(1000))
			m.Forward(1000)
			_, c, _ := m.Loss(lab)
			correct += c
		}
		fmt.Printf("seed %d norm %v epoch %d acc %.2f%%\n", *seed, *norm, ep, float64(correct)/100)
	}
}
