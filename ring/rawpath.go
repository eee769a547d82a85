package ring

import (
	"encoding/binary"
	"math"
	"unsafe"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
)

// The raw data path: with a RawWireCodec the wire bytes of a sub-chunk are
// its float32 values in little-endian order, so on a little-endian machine
// the ring sends the tensor's own memory and reads received payloads as
// float32 in place. These helpers are the only code that looks at float32
// memory as bytes.

// littleEndian is true when the machine stores float32 as the wire does.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// wireOf returns the wire bytes of x: x's own memory on a little-endian
// machine (no copy), else a fresh encoded copy.
func wireOf(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
	}
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// floatsOf returns p (4*n bytes) as n float32 values without copying, or
// nil when p cannot be viewed in place (a big-endian machine or a payload
// not aligned to 4 bytes).
func floatsOf(p []byte) []float32 {
	if !littleEndian || len(p) < 4 || uintptr(unsafe.Pointer(&p[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&p[0])), len(p)/4)
}

// expMask selects a float32's exponent; all ones is Inf or NaN. For a value
// v, (bits(v)&expMask)+expOne sets bit 31 exactly when v is not finite, so
// OR-ing that over a slice tests every value without a branch per value.
const (
	expMask = 0x7f800000
	expOne  = 0x00800000
)

// sumBlock is how many values the fused loops below handle at a time: a
// block's 8 KiB of sums (and 8 KiB of addends) are still in the L1 cache
// when its checksum is computed, so the checksum costs no pass over memory.
const sumBlock = 2048

// addWireSum adds the little-endian float32 values in p (4*len(dst) bytes)
// to dst and returns the index of the first sum that is NaN or Inf (or -1)
// and the CRC-32C of dst's wire bytes after the add (meaningful only when
// every sum is finite): one pass over memory, block by block, the add and
// its NaN/Inf check vectorised (kern.AddFinite), each block checksummed
// while it is in the cache. The checksum is Message.Sum of the next send of
// these sums.
func addWireSum(dst []float32, p []byte) (int, uint32) {
	p = p[:4*len(dst)]
	src := floatsOf(p)
	var sum uint32
	for i := 0; i < len(dst); i += sumBlock {
		d := dst[i:min(i+sumBlock, len(dst))]
		ok := true
		if src != nil {
			ok = kern.AddFinite(d, src[i:])
		} else {
			ok = addWireSlow(d, p[4*i:])
		}
		if !ok {
			return i + gradcodec.FirstNonFinite(d), 0
		}
		sum = kern.UpdateCRC32C(sum, wireOf(d))
	}
	return -1, sum
}

// addWireSlow adds the little-endian float32 values in p to dst value by
// value (a big-endian machine, or a payload not aligned to 4 bytes) and
// reports whether every sum is finite.
func addWireSlow(dst []float32, p []byte) bool {
	var acc uint32
	for i := range dst {
		v := dst[i] + math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
		dst[i] = v
		acc |= math.Float32bits(v)&expMask + expOne
	}
	return acc&0x80000000 == 0
}

// checkSum returns the index of the first NaN or Inf in x (or -1) and the
// CRC-32C of x's wire bytes, in one pass block by block.
func checkSum(x []float32) (int, uint32) {
	var sum uint32
	for i := 0; i < len(x); i += sumBlock {
		b := x[i:min(i+sumBlock, len(x))]
		if !kern.AllFinite(b) {
			return i + gradcodec.FirstNonFinite(b), 0
		}
		sum = kern.UpdateCRC32C(sum, wireOf(b))
	}
	return -1, sum
}

// divSum divides x by d and returns the CRC-32C of the quotients' wire
// bytes, in one pass block by block.
func divSum(x []float32, d float32) uint32 {
	var sum uint32
	for i := 0; i < len(x); i += sumBlock {
		b := x[i:min(i+sumBlock, len(x))]
		for k := range b {
			b[k] /= d
		}
		sum = kern.UpdateCRC32C(sum, wireOf(b))
	}
	return sum
}

// copyWire stores the little-endian float32 values in p (4*len(dst) bytes)
// in dst.
func copyWire(dst []float32, p []byte) {
	if littleEndian {
		copy(wireOf(dst), p)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
}
