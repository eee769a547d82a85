//go:build amd64 && !purego

package kern

import "golang.org/x/sys/cpu"

var (
	// useCLMUL: castagnoliCLMUL's SSE path runs here.
	useCLMUL = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41
	// useAVX512CLMUL: and its AVX-512 VPCLMULQDQ path.
	useAVX512CLMUL = useCLMUL && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VPCLMULQDQ
)

// castagnoliCLMUL returns the (non-inverted) CRC-32C of p, a multiple of 16
// and at least 64 bytes (1024 with avx512), continued from crc.
//
//go:noescape
func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32
