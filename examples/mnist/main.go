// Command mnist trains the MLP 784-256-128-10 on MNIST data-parallel across
// the ranks of a vccl job, every gradient going through collective's
// DDP-style Bucketer with the chosen codec.
//
// Run it under the launcher:
//
//	go build -o mnist ./examples/mnist
//	go run ./launcher -np 4 -- ./mnist --codec hevc --bpv 1.4
//
// Recipe (issue 5): ReLU, softmax cross-entropy, SGD momentum 0.9, lr 0.1,
// batch 64 per rank, 3 epochs, fixed seed. Each rank trains on its own shard
// (PyTorch DistributedSampler's split) and applies the gradient averaged over
// ranks. Rank 0 shows a progress bar per epoch on stderr and prints one line
// per epoch on stdout:
//
//	epoch 2 loss 0.0841 test_acc 97.91% bpv 1.41 wire 12.3MB (raw 287MB) time 31.2s
//
// loss is the mean training loss of the epoch over all ranks, test_acc the
// accuracy on the 10000 test images (each rank evaluates a slice), bpv the
// achieved bits per value of the gradient allreduces, wire the payload bytes
// all ranks sent and raw what fp32 would have sent over the same hops. At the
// end of every epoch the ranks compare a SHA-256 of their parameters
// (AllGather) and stop with an error, exit status 1, if any differs.
//
// Without the launcher's VCCL_* environment it runs as a single rank.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/examples/internal/jobcmd"
	"github.com/vccl/vccl/examples/internal/mlp"
)

func main() { jobcmd.Main("mnist", run) }

// options are the command's flags.
type options struct {
	epochs       int
	csvPath      string
	batch        int
	lr, momentum float64
	seed         uint64
	data         string
	maxSteps     int
	progress     string
	verbose      bool
	jobcmd.CodecFlags
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("mnist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.Register(fs, "gradient codec", "video codec backend")
	fs.IntVar(&o.epochs, "epochs", 3, "training epochs")
	fs.StringVar(&o.csvPath, "csv", "", "write the per-epoch figures to this CSV file (rank 0)")
	fs.IntVar(&o.batch, "batch", mlp.DefaultBatchSize, "batch size per rank")
	fs.Float64Var(&o.lr, "lr", mlp.DefaultLR, "SGD learning rate")
	fs.Float64Var(&o.momentum, "momentum", mlp.DefaultMomentum, "SGD momentum")
	fs.Uint64Var(&o.seed, "seed", mlp.DefaultSeed, "initialisation and shuffling seed (the same on every rank)")
	fs.StringVar(&o.data, "data", "", "directory holding the MNIST .gz files (default: the GoMNIST module in the Go module cache, or $"+mlp.EnvMNISTDir+")")
	fs.IntVar(&o.maxSteps, "max-steps", 0, "stop each epoch after this many steps (0: the whole shard); for smoke tests")
	fs.StringVar(&o.progress, "progress", "auto", "rank 0's progress bar: auto (redrawn on a terminal, a line every few seconds otherwise) or off")
	fs.BoolVar(&o.verbose, "v", false, "rank 0 also prints where each epoch's time went (compute, waiting for the allreduces, codec, network)")
	if err := o.Parse(fs, args); err != nil {
		return nil, err
	}
	switch {
	case o.epochs < 1:
		return nil, fmt.Errorf("--epochs %d: want at least 1", o.epochs)
	case o.batch < 1:
		return nil, fmt.Errorf("--batch %d: want at least 1", o.batch)
	case !(o.lr > 0) || math.IsInf(o.lr, 0):
		return nil, fmt.Errorf("--lr %v: want a positive number", o.lr)
	case !(o.momentum >= 0 && o.momentum < 1):
		return nil, fmt.Errorf("--momentum %v: want 0 <= momentum < 1", o.momentum)
	case o.maxSteps < 0:
		return nil, fmt.Errorf("--max-steps %d: want >= 0", o.maxSteps)
	case o.progress != "auto" && o.progress != "off":
		return nil, fmt.Errorf("--progress %q: want auto or off", o.progress)
	}
	return o, nil
}

// epochSummary is what every rank contributes at the end of an epoch.
type epochSummary struct {
	hash                [32]byte
	lossSum             float64 // summed per-sample training loss
	samples             int64   // training samples behind lossSum
	correct, tested     int64   // test-set results of this rank's slice
	wireBytes, rawBytes int64   // gradient allreduce bytes this rank sent
}

func (s *epochSummary) report() jobcmd.Report {
	return jobcmd.Report{Hash: s.hash, Words: []uint64{math.Float64bits(s.lossSum),
		uint64(s.samples), uint64(s.correct), uint64(s.tested), uint64(s.wireBytes), uint64(s.rawBytes)}}
}

func fromReport(r jobcmd.Report) epochSummary {
	w := r.Words
	return epochSummary{hash: r.Hash, lossSum: math.Float64frombits(w[0]), samples: int64(w[1]),
		correct: int64(w[2]), tested: int64(w[3]), wireBytes: int64(w[4]), rawBytes: int64(w[5])}
}

// evalBatch is the batch size of the test-set evaluation.
const evalBatch = 500

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, cfg, err := jobcmd.Setup(args, stderr, parseFlags)
	if err != nil {
		return err
	}
	train, test, err := mlp.LoadMNIST(o.data)
	if err != nil {
		return fmt.Errorf("rank %d: %w", cfg.Rank, err)
	}
	comm, err := collective.Init(ctx, cfg)
	if err != nil {
		return err
	}
	defer jobcmd.Close(comm, stderr, &err)
	rank, world := comm.Rank(), comm.Size()
	fail := jobcmd.Failf(rank)

	model, err := mlp.New(mlp.DefaultSizes, o.seed, max(o.batch, evalBatch))
	if err != nil {
		return fail("%v", err)
	}
	mts := model.Tensors()
	cts := make([]collective.Tensor, len(mts))
	for i, t := range mts {
		cts[i] = collective.Tensor{Name: t.Name, Rows: t.Rows, Cols: t.Cols, Grad: t.Grad}
	}
	bk, err := collective.NewBucketer(comm, cts, collective.BucketOptions{Name: "mnist"})
	if err != nil {
		return err
	}

	csvw, err := jobcmd.CreateCSV(o.csvPath, rank, []string{"epoch", "loss", "test_acc", "bpv", "wire_bytes", "raw_bytes", "time_s", "codec", "ranks"})
	if err != nil {
		return fail("--csv: %v", err)
	}
	defer csvw.Close()
	if rank == 0 {
		jobcmd.Banner(stdout, "mnist", world, cfg)
		fmt.Fprintf(stdout, ", batch %d per rank, lr %g, momentum %g, %d epochs, %d parameters\n",
			o.batch, o.lr, o.momentum, o.epochs, model.NumParams())
	}

	labels := make([]uint8, max(o.batch, evalBatch))
	testIdx := make([]int, 0, test.N/world+1)
	for i := rank * test.N / world; i < (rank+1)*test.N/world; i++ {
		testIdx = append(testIdx, i)
	}
	lr, mom := float32(o.lr), float32(o.momentum)

	for epoch := 1; epoch <= o.epochs; epoch++ {
		start := time.Now()
		idx, err := mlp.Shard(train.N, rank, world, o.seed, epoch)
		if err != nil {
			return fail("%v", err)
		}
		steps := (len(idx) + o.batch - 1) / o.batch
		if o.maxSteps > 0 {
			steps = min(steps, o.maxSteps)
		}
		bar := jobcmd.NewBar(o.progress, rank, steps, fmt.Sprintf("epoch %d/%d", epoch, o.epochs), 5*time.Second, stderr)
		var sum epochSummary
		var stats collective.Stats
		var waitTime time.Duration
		for s := 0; s < steps; s++ {
			b := idx[s*o.batch : min((s+1)*o.batch, len(idx))]
			n := len(b)
			train.Fill(model.Input(n), labels[:n], b)
			model.Forward(n)
			var markErr error
			loss, err := model.Backward(labels[:n], func(i int) {
				if err := bk.MarkReady(i); err != nil && markErr == nil {
					markErr = err
				}
			})
			if err != nil {
				return fail("epoch %d step %d: %v", epoch, s+1, err)
			}
			t0 := time.Now()
			st, err := bk.Wait(ctx)
			waitTime += time.Since(t0)
			if err != nil {
				return fmt.Errorf("epoch %d step %d: gradient allreduce: %w", epoch, s+1, err)
			}
			if markErr != nil {
				return fmt.Errorf("epoch %d step %d: %w", epoch, s+1, markErr)
			}
			stats = stats.Add(st)
			model.Step(lr, mom)
			sum.lossSum += loss * float64(n)
			sum.samples += int64(n)
			if bar != nil {
				_ = bar.Add(1)
			}
		}
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(bar.W)
		}

		for k := 0; k < len(testIdx); k += evalBatch {
			b := testIdx[k:min(k+evalBatch, len(testIdx))]
			test.Fill(model.Input(len(b)), labels[:len(b)], b)
			model.Forward(len(b))
			_, c, err := model.Loss(labels[:len(b)])
			if err != nil {
				return fail("evaluating: %v", err)
			}
			sum.correct += int64(c)
			sum.tested += int64(len(b))
		}
		sum.hash = model.Hash()
		sum.wireBytes, sum.rawBytes = stats.WireBytes, stats.RawBytes

		reps, err := jobcmd.Gather(ctx, comm, fmt.Sprintf("epoch %d", epoch), sum.report())
		if err != nil {
			return err
		}
		all := fromReport(jobcmd.SumReports(reps, 0)) // word 0, lossSum, is a float64
		if rank != 0 {
			continue
		}
		elapsed := time.Since(start)
		loss := all.lossSum / float64(max(all.samples, 1))
		acc := 100 * float64(all.correct) / float64(max(all.tested, 1))
		bpv := jobcmd.BitsPerValue(all.wireBytes, all.rawBytes)
		fmt.Fprintf(stdout, "epoch %d loss %.4f test_acc %.2f%% bpv %.2f wire %s (raw %s) time %.1fs\n",
			epoch, loss, acc, bpv, jobcmd.Megabytes(all.wireBytes), jobcmd.Megabytes(all.rawBytes), elapsed.Seconds())
		if o.verbose {
			fmt.Fprintf(stdout, "  rank 0: %d steps, waited %.1fs for allreduces; %v\n", steps, waitTime.Seconds(), stats)
		}
		if csvw != nil {
			rec := []string{strconv.Itoa(epoch), fmt.Sprintf("%.6f", loss), fmt.Sprintf("%.4f", acc), fmt.Sprintf("%.4f", bpv),
				strconv.FormatInt(all.wireBytes, 10), strconv.FormatInt(all.rawBytes, 10),
				fmt.Sprintf("%.3f", elapsed.Seconds()), cfg.Codec, strconv.Itoa(world)}
			if err := csvw.Write(rec); err != nil {
				return fail("--csv: %v", err)
			}
		}
	}
	return nil
}
