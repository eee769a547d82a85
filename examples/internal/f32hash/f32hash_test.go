package f32hash

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"testing"
)

// TestSumIsSHA256OfLittleEndianBytes checks Sum against the SHA-256 of the
// whole byte image, across the 8 KiB buffer boundary.
func TestSumIsSHA256OfLittleEndianBytes(t *testing.T) {
	for _, n := range []int{0, 1, 2047, 2048, 2049, 5000} {
		x := make([]float32, n)
		b := make([]byte, 4*n)
		for i := range x {
			x[i] = float32(i)*0.37 - 11
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x[i]))
		}
		if got, want := Sum(x), sha256.Sum256(b); got != want {
			t.Errorf("n=%d: Sum %x, want %x", n, got[:6], want[:6])
		}
	}
}
