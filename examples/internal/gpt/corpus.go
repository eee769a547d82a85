package gpt

import (
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Corpus is one rank's view of a text corpus made of the .go files under a
// directory (the Go distribution's own source by default): a fixed, sorted
// file list, every ValEvery-th file held out for validation (whole files),
// and the rest dealt round-robin to the ranks. Each rank reads only its
// shard and the validation files.
type Corpus struct {
	// Train is this rank's training shard: its files concatenated.
	Train []byte
	// Val is the validation split: the held-out files concatenated (the
	// same on every rank).
	Val []byte
	// Files, TrainFiles and ValFiles count the corpus's files, the
	// training files of this shard and the validation files.
	Files, TrainFiles, ValFiles int
}

// ListFiles returns the corpus's files under root: every regular .go file
// outside testdata directories, as paths relative to root, sorted.
func ListFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".go") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gpt: listing the corpus under %s: %w", root, err)
	}
	slices.Sort(files)
	return files, nil
}

// LoadCorpus reads rank's shard of the corpus under root for a job of world
// ranks, holding out every valEvery-th file (the last of each group of
// valEvery) for validation. ctx is the context length the shards must
// exceed.
func LoadCorpus(root string, rank, world, valEvery, ctx int) (*Corpus, error) {
	if world < 1 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("gpt: rank %d of %d", rank, world)
	}
	if valEvery < 2 {
		return nil, fmt.Errorf("gpt: validation every %d files, want >= 2", valEvery)
	}
	files, err := ListFiles(root)
	if err != nil {
		return nil, err
	}
	c := &Corpus{Files: len(files)}
	j := 0
	for i, f := range files {
		isVal := i%valEvery == valEvery-1
		mine := false
		if !isVal {
			mine = j%world == rank
			j++
		}
		if !isVal && !mine {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return nil, fmt.Errorf("gpt: reading the corpus: %w", err)
		}
		if isVal {
			c.Val = append(c.Val, b...)
			c.ValFiles++
		} else {
			c.Train = append(c.Train, b...)
			c.TrainFiles++
		}
	}
	if len(c.Train) <= ctx || len(c.Val) <= ctx {
		return nil, fmt.Errorf("gpt: corpus under %s too small: %d files, training shard %d of %d has %d bytes and the validation split %d, both need more than the context of %d",
			root, len(files), rank, world, len(c.Train), len(c.Val), ctx)
	}
	return c, nil
}

// FillBatch writes n random windows of data into tokens and targets (n·T
// values each; targets is tokens shifted by one byte), drawn from a
// generator that depends only on seed, rank and step, so a run can be
// replayed and a test can rebuild any rank's batch.
func FillBatch(tokens, targets []uint16, data []byte, n, T int, seed uint64, rank, step int) {
	rng := rand.New(rand.NewPCG(seed^0x6c6d_6261_7463_6800, uint64(step)<<20|uint64(rank)))
	for s := 0; s < n; s++ {
		start := rng.IntN(len(data) - T)
		w := data[start : start+T+1]
		tk, tg := tokens[s*T:(s+1)*T], targets[s*T:(s+1)*T]
		for i := 0; i < T; i++ {
			tk[i], tg[i] = uint16(w[i]), uint16(w[i+1])
		}
	}
}

// ValWindows returns the starts of count windows of T+1 bytes spread evenly
// over data (the validation split), the same on every rank.
func ValWindows(data []byte, count, T int) []int {
	last := len(data) - T - 1
	starts := make([]int, count)
	for k := range starts {
		if count > 1 {
			starts[k] = int(int64(k) * int64(last) / int64(count-1))
		}
	}
	return starts
}

// FillWindows writes the windows of data starting at starts into tokens and
// targets.
func FillWindows(tokens, targets []uint16, data []byte, starts []int, T int) {
	for s, start := range starts {
		w := data[start : start+T+1]
		tk, tg := tokens[s*T:(s+1)*T], targets[s*T:(s+1)*T]
		for i := 0; i < T; i++ {
			tk[i], tg[i] = uint16(w[i]), uint16(w[i+1])
		}
	}
}

// UnigramPerplexity is the baseline a language model must beat: the
// perplexity, on the targets of the validation windows, of the byte
// distribution counted in counts (add-one smoothed).
func UnigramPerplexity(counts *[256]uint64, val []byte, starts []int, T int) float64 {
	var total float64
	for _, c := range counts {
		total += float64(c) + 1
	}
	var nll float64
	var k int
	for _, start := range starts {
		for _, b := range val[start+1 : start+T+1] {
			nll -= math.Log((float64(counts[b]) + 1) / total)
			k++
		}
	}
	return math.Exp(nll / float64(max(k, 1)))
}
