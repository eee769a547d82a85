// Package f32hash fingerprints float32 slices: the SHA-256 that the ranks
// of the examples compare to prove their replicas (model parameters,
// allreduce results) are bit-identical.
package f32hash

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Sum returns the SHA-256 of x's bytes, each value as little-endian float32.
func Sum(x []float32) [32]byte {
	h := sha256.New()
	var buf [8192]byte
	for i := 0; i < len(x); {
		k := 0
		for ; k+4 <= len(buf) && i < len(x); i++ {
			binary.LittleEndian.PutUint32(buf[k:], math.Float32bits(x[i]))
			k += 4
		}
		h.Write(buf[:k])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
