//go:build !amd64 || purego

package kern

// No carry-less multiply kernels here: hash/crc32 does it all.
var (
	useCLMUL       = false
	useAVX512CLMUL = false
)

func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32 { panic("unreachable") }
