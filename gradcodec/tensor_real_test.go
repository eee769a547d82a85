package gradcodec

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
)

// loadNpyF32 reads a float32 .npy file of 1 or 2 dimensions.
func loadNpyF32(t *testing.T, p string) ([]float32, Shape) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	off, hl := 10, int(binary.LittleEndian.Uint16(b[8:]))
	if b[6] >= 2 {
		off, hl = 12, int(binary.LittleEndian.Uint32(b[8:]))
	}
	m := regexp.MustCompile(`'shape': \((\d+),\s*(\d*)`).FindStringSubmatch(string(b[off : off+hl]))
	r, _ := strconv.Atoi(m[1])
	c := 1
	if m[2] != "" {
		c, _ = strconv.Atoi(m[2])
	} else {
		r, c = 1, r
	}
	d := b[off+hl:]
	x := make([]float32, r*c)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
	}
	return x, Shape{r, c}
}

// TestTensorRealGrads reports rate and NMSE on recorded gradients in
// $VCCL_GRADS (skipped without it).
func TestTensorRealGrads(t *testing.T) {
	dir := os.Getenv("VCCL_GRADS")
	if dir == "" {
		t.Skip("VCCL_GRADS not set")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.npy"))
	sort.Strings(files)
	for _, f := range files {
		x, s := loadNpyF32(t, f)
		if s.Rows == 1 {
			s = ShapeFor(s.Cols)
		}
		line := filepath.Base(f)
		for _, bpv := range []float64{0.5, 1.0, 1.4, 2, 3} {
			e := newTensorEncoder(bpv)
			var d tensorDecoder
			tensorRoundTrip(t, e, &d, x, s)
			y, got := tensorRoundTrip(t, e, &d, x, s)
			line += " " + strconv.FormatFloat(got, 'f', 3, 64) + "/" + strconv.FormatFloat(tensorNMSE(x, y), 'f', 4, 64)
		}
		t.Log(line)
	}
}
