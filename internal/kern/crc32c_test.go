package kern

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// TestUpdateCRC32C checks UpdateCRC32C against hash/crc32 over lengths
// around the kernel's 16- and 64-byte steps and the 1024-byte threshold of
// its AVX-512 path, unaligned starts and running CRCs, on every path this
// machine has (the AVX-512 one, the SSE one, hash/crc32 alone).
func TestUpdateCRC32C(t *testing.T) {
	defer func(a, b bool) { useCLMUL, useAVX512CLMUL = a, b }(useCLMUL, useAVX512CLMUL)
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 1<<20+200)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	var lengths []int
	for n := 0; n <= 300; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 1008, 1023, 1024, 1025, 1040, 1088, 1152, 1216, 1280, 1296, 1360, 2000, 4095, 8192, 131072+13, 1<<20)
	paths := []struct {
		name          string
		clmul, avx512 bool
	}{{"avx512", true, true}, {"sse", true, false}, {"go", false, false}}
	for _, path := range paths {
		if (path.clmul && !useCLMUL) || (path.avx512 && !useAVX512CLMUL) {
			t.Logf("%s: not on this machine", path.name)
			continue
		}
		useCLMUL, useAVX512CLMUL = path.clmul, path.avx512
		for _, n := range lengths {
			for _, off := range []int{0, 1, 7} {
				p := buf[off : off+n]
				crc := rng.Uint32()
				if got, want := UpdateCRC32C(crc, p), crc32.Update(crc, castagnoli, p); got != want {
					t.Fatalf("%s: %d bytes at offset %d from %08x: %08x, want %08x", path.name, n, off, crc, got, want)
				}
			}
		}
	}
}

func BenchmarkUpdateCRC32C(b *testing.B) {
	for _, n := range []int{8 << 10, 128 << 10} {
		p := make([]byte, n)
		b.Run(fmt.Sprintf("kern/%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				UpdateCRC32C(0, p)
			}
		})
		b.Run(fmt.Sprintf("hash-crc32/%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				crc32.Update(0, castagnoli, p)
			}
		})
	}
}
