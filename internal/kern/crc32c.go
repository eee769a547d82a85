package kern

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// UpdateCRC32C returns the CRC-32C (Castagnoli) of p continued from crc,
// exactly crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), p). On amd64
// with PCLMULQDQ it folds 64 bytes per step with carry-less multiplies
// (256 bytes per step in four chains with AVX-512 VPCLMULQDQ) instead of
// the standard library's three CRC32 instruction streams; the last bytes
// (under 16) go through hash/crc32.
func UpdateCRC32C(crc uint32, p []byte) uint32 {
	if useCLMUL && len(p) >= 64 {
		do := len(p) &^ 15
		crc = ^castagnoliCLMUL(^crc, p[:do], useAVX512CLMUL && do >= 1024)
		p = p[do:]
	}
	return crc32.Update(crc, castagnoli, p)
}
