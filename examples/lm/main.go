// Command lm trains a byte-level decoder-only transformer language model on
// the Go distribution's own source, data-parallel across the ranks of a vccl
// job, every gradient going through collective's DDP-style Bucketer with the
// chosen codec.
//
// Run it under the launcher:
//
//	go build -o lm ./examples/lm
//	go run ./launcher -np 4 -- ./lm --codec hevc --bpv 1.4
//
// Corpus: every .go file under $(go env GOROOT)/src outside testdata
// directories, in sorted order; every 20th file is held out for validation
// (whole files), the rest are dealt round-robin to the ranks, and each rank
// trains on random windows of its own shard. Model (package gpt): 2 pre-norm
// blocks of width 64 with 4 attention heads and a GELU MLP of 256, context
// 64, bytes in and out. AdamW (betas 0.9/0.99, weight decay 0.1 on the
// matrices and embeddings) with linear warm-up and cosine decay to a tenth
// of the peak rate; the averaged gradient's global norm is clipped to 1.
//
// Every --eval-every steps and at the end, the ranks evaluate the model on
// fixed windows spread over the validation split (each rank a slice), and
// compare a SHA-256 of their parameters (AllGather), stopping with an error,
// exit status 1, if any differs. Rank 0 prints one line per evaluation:
//
//	step 400/1200 train_loss 1.9412 val_loss 1.8827 val_ppl 6.57 bpv 1.52 wire 3.10MB (raw 65.4MB) time 160.2s
//
// train_loss is the mean training loss since the last evaluation over all
// ranks, val_ppl = exp(val_loss) the perplexity per byte, bpv the achieved
// bits per value of the gradient allreduces so far, wire the payload bytes
// all ranks sent and raw what fp32 would have sent over the same hops.
//
// Without the launcher's VCCL_* environment it runs as a single rank.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/examples/internal/gpt"
	"github.com/vccl/vccl/examples/internal/jobcmd"
	"github.com/vccl/vccl/gradcodec"
)

func main() { jobcmd.Main("lm", run) }

// options are the command's flags.
type options struct {
	steps, evalEvery, evalWindows int
	csvPath, data, save, progress string
	rawTensors                    string
	batch, warmup, valEvery       int
	freezeVar                     int
	lr, minLRFrac, wd, clip       float64
	seed                          uint64
	model                         gpt.Config
	verbose, listCodecs           bool
	jobcmd.CodecFlags
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{model: gpt.DefaultConfig}
	fs := flag.NewFlagSet("lm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.Register(fs, "gradient codec", "video codec backend")
	fs.IntVar(&o.steps, "steps", 1200, "training steps")
	fs.IntVar(&o.evalEvery, "eval-every", 200, "evaluate on the validation split and compare parameter hashes every this many steps (and at the end)")
	fs.IntVar(&o.evalWindows, "eval-windows", 512, "validation windows of context length, spread evenly over the validation split, split across the ranks")
	fs.StringVar(&o.csvPath, "csv", "", "write the figures of every evaluation to this CSV file (rank 0)")
	fs.StringVar(&o.data, "data", "", "corpus directory: its .go files outside testdata (default: $(go env GOROOT)/src)")
	fs.IntVar(&o.valEvery, "val-every", 20, "hold out every this many files (whole files) for validation")
	fs.StringVar(&o.save, "save", "", "rank 0 writes the final parameters, then the last step's averaged gradient, as little-endian float32 to this file")
	fs.IntVar(&o.batch, "batch", 16, "sequences per rank per step")
	fs.IntVar(&o.model.Ctx, "ctx", o.model.Ctx, "context length in bytes")
	fs.IntVar(&o.model.Dim, "dim", o.model.Dim, "model width")
	fs.IntVar(&o.model.Heads, "heads", o.model.Heads, "attention heads")
	fs.IntVar(&o.model.Layers, "layers", o.model.Layers, "transformer blocks")
	fs.IntVar(&o.model.Hidden, "hidden", 0, "MLP width (0: 4×dim)")
	fs.Float64Var(&o.lr, "lr", 3e-3, "peak AdamW learning rate")
	fs.Float64Var(&o.minLRFrac, "min-lr", 0.1, "final learning rate as a fraction of the peak (cosine decay)")
	fs.IntVar(&o.warmup, "warmup", 100, "learning-rate warm-up steps")
	fs.Float64Var(&o.wd, "wd", 0.1, "AdamW weight decay (matrices and embeddings)")
	fs.IntVar(&o.freezeVar, "freeze-var", 0, "stop updating AdamW's second moment after this many steps, as 1-bit Adam does after its uncompressed warm-up (0: never); pair it with VCCL_WARMUP_STEPS")
	fs.Float64Var(&o.clip, "clip", 1, "clip the averaged gradient's global norm to this (0: off)")
	fs.Uint64Var(&o.seed, "seed", 1, "initialisation and sampling seed (the same on every rank)")
	fs.StringVar(&o.progress, "progress", "auto", "rank 0's progress bar: auto (redrawn on a terminal, a line every few seconds otherwise) or off")
	fs.StringVar(&o.rawTensors, "raw-tensors", "", "comma-separated name patterns (path.Match, e.g. 'wte,h*.attn.qkv.w') of tensors whose gradients always travel raw")
	fs.BoolVar(&o.listCodecs, "list-codecs", false, "print the registered gradient codecs, one a line, and exit")
	fs.BoolVar(&o.verbose, "v", false, "rank 0 also prints where the time went (compute, waiting for the allreduces, codec, network)")
	if err := o.Parse(fs, args); err != nil {
		return nil, err
	}
	if o.model.Hidden == 0 {
		o.model.Hidden = 4 * o.model.Dim
	}
	switch {
	case o.steps < 1:
		return nil, fmt.Errorf("--steps %d: want at least 1", o.steps)
	case o.evalEvery < 1:
		return nil, fmt.Errorf("--eval-every %d: want at least 1", o.evalEvery)
	case o.evalWindows < 1:
		return nil, fmt.Errorf("--eval-windows %d: want at least 1", o.evalWindows)
	case o.batch < 1:
		return nil, fmt.Errorf("--batch %d: want at least 1", o.batch)
	case o.freezeVar < 0:
		return nil, fmt.Errorf("--freeze-var %d: want >= 0", o.freezeVar)
	case o.warmup < 0:
		return nil, fmt.Errorf("--warmup %d: want >= 0", o.warmup)
	case !(o.lr > 0) || math.IsInf(o.lr, 0):
		return nil, fmt.Errorf("--lr %v: want a positive number", o.lr)
	case !(o.minLRFrac >= 0 && o.minLRFrac <= 1):
		return nil, fmt.Errorf("--min-lr %v: want a fraction in [0, 1]", o.minLRFrac)
	case !(o.clip >= 0) || math.IsInf(o.clip, 0):
		return nil, fmt.Errorf("--clip %v: want >= 0", o.clip)
	case o.progress != "auto" && o.progress != "off":
		return nil, fmt.Errorf("--progress %q: want auto or off", o.progress)
	}
	return o, nil
}

// evalReport is what every rank contributes at an evaluation.
type evalReport struct {
	hash                [32]byte
	trainLoss           float64 // summed mean-per-step training loss since the last evaluation
	trainSteps          int64
	valLoss             float64 // summed per-token validation loss of this rank's windows
	valTokens           int64
	wireBytes, rawBytes int64 // gradient allreduce bytes this rank sent so far
}

func (r *evalReport) report() jobcmd.Report {
	return jobcmd.Report{Hash: r.hash, Words: []uint64{math.Float64bits(r.trainLoss), uint64(r.trainSteps),
		math.Float64bits(r.valLoss), uint64(r.valTokens), uint64(r.wireBytes), uint64(r.rawBytes)}}
}

func fromReport(r jobcmd.Report) evalReport {
	w := r.Words
	return evalReport{hash: r.Hash, trainLoss: math.Float64frombits(w[0]), trainSteps: int64(w[1]),
		valLoss: math.Float64frombits(w[2]), valTokens: int64(w[3]), wireBytes: int64(w[4]), rawBytes: int64(w[5])}
}

// buckets routes the model's gradients to two Bucketers: the tensors named
// by --raw-tensors go raw, the others through the configured codec.
type buckets struct {
	bks   []*collective.Bucketer
	which [][2]int // model tensor index → (bucketer, index in it)
}

func newBuckets(comm *collective.Comm, mts []gpt.Tensor, rawPatterns string) (*buckets, error) {
	var pats []string
	for _, p := range strings.Split(rawPatterns, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("--raw-tensors %q: %w", p, err)
			}
			pats = append(pats, p)
		}
	}
	var groups [2][]collective.Tensor
	b := &buckets{which: make([][2]int, len(mts))}
	matched := make([]bool, len(pats))
	for i, t := range mts {
		g := 0
		for k, p := range pats {
			if ok, _ := path.Match(p, t.Name); ok {
				g, matched[k] = 1, true
			}
		}
		b.which[i] = [2]int{g, len(groups[g])}
		groups[g] = append(groups[g], collective.Tensor{Name: t.Name, Rows: t.Rows, Cols: t.Cols, Grad: t.Grad})
	}
	for k, ok := range matched {
		if !ok {
			return nil, fmt.Errorf("--raw-tensors: %q names no tensor of the model", pats[k])
		}
	}
	names := [2]string{"lm", "lm-raw"}
	opts := [2][]collective.Option{nil, {collective.WithCodec("raw")}}
	b.bks = make([]*collective.Bucketer, 2)
	for g, ts := range groups {
		if len(ts) == 0 {
			continue
		}
		bk, err := collective.NewBucketer(comm, ts, collective.BucketOptions{Name: names[g], Options: opts[g]})
		if err != nil {
			return nil, err
		}
		b.bks[g] = bk
	}
	return b, nil
}

// MarkReady marks the model's tensor i ready.
func (b *buckets) MarkReady(i int) error {
	w := b.which[i]
	return b.bks[w[0]].MarkReady(w[1])
}

// Wait waits for both Bucketers' allreduces.
func (b *buckets) Wait(ctx context.Context) (collective.Stats, error) {
	var all collective.Stats
	for _, bk := range b.bks {
		if bk == nil {
			continue
		}
		st, err := bk.Wait(ctx)
		if err != nil {
			return all, err
		}
		all = all.Add(st)
	}
	return all, nil
}

// AdamW's constants.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.99
	adamEps   = 1e-8
)

// evalBatch is the number of validation windows evaluated per forward pass.
const evalBatch = 32

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.listCodecs {
		for _, c := range gradcodec.Codecs() {
			fmt.Fprintln(stdout, c)
		}
		return nil
	}
	cfg, err := o.Config()
	if err != nil {
		return err
	}
	if o.data == "" {
		if o.data, err = goSrc(); err != nil {
			return fmt.Errorf("rank %d: %w", cfg.Rank, err)
		}
	}
	T := o.model.Ctx
	corpus, err := gpt.LoadCorpus(o.data, cfg.Rank, max(cfg.WorldSize, 1), o.valEvery, T)
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

	model, err := gpt.New(o.model, o.seed, max(o.batch, evalBatch))
	if err != nil {
		return fail("%v", err)
	}
	opt, err := gpt.NewAdamW(model, adamBeta1, adamBeta2, adamEps, o.wd)
	if err != nil {
		return fail("%v", err)
	}
	opt.FreezeVarianceAfter = o.freezeVar
	sched := gpt.Schedule{Peak: o.lr, MinFrac: o.minLRFrac, Warmup: o.warmup, Total: o.steps}
	bk, err := newBuckets(comm, model.Tensors(), o.rawTensors)
	if err != nil {
		return fail("%v", err)
	}

	// The validation windows, and this rank's slice of them.
	starts := gpt.ValWindows(corpus.Val, o.evalWindows, T)
	myStarts := starts[rank*len(starts)/world : (rank+1)*len(starts)/world]

	// The unigram baseline: byte counts of every rank's training shard.
	var counts [256]uint64
	for _, b := range corpus.Train {
		counts[b]++
	}
	parts, err := comm.AllGather(ctx, jobcmd.Report{Words: counts[:]}.Marshal())
	if err != nil {
		return fmt.Errorf("gathering the byte counts: %w", err)
	}
	var all [256]uint64
	var trainBytes uint64
	for r, p := range parts {
		rep, err := jobcmd.UnmarshalReport(p, 256)
		if err != nil {
			return fail("byte counts from rank %d: %v", r, err)
		}
		for i, c := range rep.Words {
			all[i] += c
			trainBytes += c
		}
	}
	unigram := gpt.UnigramPerplexity(&all, corpus.Val, starts, T)

	csvw, err := jobcmd.CreateCSV(o.csvPath, rank, []string{"step", "train_loss", "val_loss", "val_ppl", "bpv", "wire_bytes", "raw_bytes", "time_s", "codec", "ranks", "unigram_ppl"})
	if err != nil {
		return fail("--csv: %v", err)
	}
	defer csvw.Close()
	if rank == 0 {
		c := o.model
		jobcmd.Banner(stdout, "lm", world, cfg)
		fmt.Fprintf(stdout, "; %d layers, width %d, %d heads, MLP %d, context %d, %d parameters; batch %d×%d bytes per rank, %d steps, lr %g (warm-up %d), seed %d\n",
			c.Layers, c.Dim, c.Heads, c.Hidden, c.Ctx, model.NumParams(), o.batch, T, o.steps, o.lr, o.warmup, o.seed)
		fmt.Fprintf(stdout, "corpus: %s, %d files, %.1f MB for training, %d files (%.1f MB) held out; %d validation windows; unigram perplexity %.2f\n",
			o.data, corpus.Files, float64(trainBytes)/1e6, corpus.ValFiles, float64(len(corpus.Val))/1e6, len(starts), unigram)
	}

	start := time.Now()
	bar := jobcmd.NewBar(o.progress, rank, o.steps, "train", 10*time.Second, stderr)
	var rep evalReport
	var stats collective.Stats
	var waitTime, computeTime time.Duration
	for step := 1; step <= o.steps; step++ {
		t0 := time.Now()
		tok, tgt := model.Tokens(o.batch)
		gpt.FillBatch(tok, tgt, corpus.Train, o.batch, T, o.seed, rank, step)
		model.Forward(o.batch)
		var markErr error
		loss, err := model.Backward(func(i int) {
			if err := bk.MarkReady(i); err != nil && markErr == nil {
				markErr = err
			}
		})
		if err != nil {
			return fail("step %d: %v", step, err)
		}
		t1 := time.Now()
		computeTime += t1.Sub(t0)
		st, err := bk.Wait(ctx)
		waitTime += time.Since(t1)
		if err != nil {
			return fmt.Errorf("step %d: gradient allreduce: %w", step, err)
		}
		if markErr != nil {
			return fmt.Errorf("step %d: %w", step, markErr)
		}
		stats = stats.Add(st)
		scale := 1.0
		if o.clip > 0 {
			if norm := gpt.GradNorm(model); norm > o.clip {
				scale = o.clip / norm
			}
		}
		opt.Step(sched.At(step), scale)
		rep.trainLoss += loss
		rep.trainSteps++
		if bar != nil {
			_ = bar.Add(1)
		}
		if step%o.evalEvery != 0 && step != o.steps {
			continue
		}

		rep.valLoss, rep.valTokens = 0, 0
		for k := 0; k < len(myStarts); k += evalBatch {
			s := myStarts[k:min(k+evalBatch, len(myStarts))]
			tok, tgt := model.Tokens(len(s))
			gpt.FillWindows(tok, tgt, corpus.Val, s, T)
			model.Forward(len(s))
			rep.valLoss += model.Loss()
			rep.valTokens += int64(len(s) * T)
		}
		rep.hash = model.Hash()
		rep.wireBytes, rep.rawBytes = stats.WireBytes, stats.RawBytes
		reps, err := jobcmd.Gather(ctx, comm, fmt.Sprintf("step %d", step), rep.report())
		if err != nil {
			return err
		}
		sum := fromReport(jobcmd.SumReports(reps, 0, 2)) // words 0 and 2, trainLoss and valLoss, are float64s
		rep.trainLoss, rep.trainSteps = 0, 0
		if rank != 0 {
			continue
		}
		elapsed := time.Since(start)
		trainLoss := sum.trainLoss / float64(max(sum.trainSteps, 1))
		valLoss := sum.valLoss / float64(max(sum.valTokens, 1))
		bpv := jobcmd.BitsPerValue(sum.wireBytes, sum.rawBytes)
		if bar != nil {
			fmt.Fprintln(bar.W)
		}
		fmt.Fprintf(stdout, "step %d/%d train_loss %.4f val_loss %.4f val_ppl %.3f bpv %.2f wire %s (raw %s) time %.1fs\n",
			step, o.steps, trainLoss, valLoss, math.Exp(valLoss), bpv, jobcmd.Megabytes(sum.wireBytes), jobcmd.Megabytes(sum.rawBytes), elapsed.Seconds())
		if o.verbose {
			fmt.Fprintf(stdout, "  rank 0: compute %.1fs, waited %.1fs for allreduces; %v\n", computeTime.Seconds(), waitTime.Seconds(), stats)
		}
		if csvw != nil {
			rec := []string{strconv.Itoa(step), fmt.Sprintf("%.6f", trainLoss), fmt.Sprintf("%.6f", valLoss), fmt.Sprintf("%.4f", math.Exp(valLoss)),
				fmt.Sprintf("%.4f", bpv), strconv.FormatInt(sum.wireBytes, 10), strconv.FormatInt(sum.rawBytes, 10),
				fmt.Sprintf("%.3f", elapsed.Seconds()), cfg.Codec, strconv.Itoa(world), fmt.Sprintf("%.4f", unigram)}
			if err := csvw.Write(rec); err != nil {
				return fail("--csv: %v", err)
			}
		}
	}
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(bar.W)
	}
	if rank == 0 && o.save != "" {
		if err := saveFloats(o.save, model.Params, model.Grads); err != nil {
			return fail("--save: %v", err)
		}
	}
	return nil
}

// goSrc returns $(go env GOROOT)/src, the default corpus.
func goSrc() (string, error) {
	root := ""
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		root = strings.TrimSpace(string(out))
	}
	if root == "" {
		root = runtime.GOROOT() //nolint:staticcheck // fallback where no go command is on PATH
	}
	if root == "" {
		return "", fmt.Errorf("no corpus: the go command is not on PATH and the binary knows no GOROOT; pass --data")
	}
	return filepath.Join(root, "src"), nil
}

// saveFloats writes the slices one after the other as little-endian float32.
func saveFloats(path string, slices ...[]float32) error {
	var b []byte
	for _, s := range slices {
		b = gradcodec.AppendFloat32s(b, s)
	}
	return os.WriteFile(path, b, 0o644)
}
