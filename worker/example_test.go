package worker_test

import (
	"context"
	"fmt"

	"github.com/vccl/vccl/worker"
)

// A job of one rank needs no secret and no network. With more ranks, every
// rank runs the same code with its own Rank, the shared Secret and Join set
// to the seed's memberlist address (see ConfigFromEnv for the variables the
// launcher sets).
func ExampleStart() {
	w, err := worker.Start(context.Background(), worker.Config{Rank: 0, WorldSize: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	fmt.Println(w.Rank(), w.Size(), w.Next() == nil)
	// Output: 0 1 true
}
