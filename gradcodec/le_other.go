//go:build !(amd64 || arm64 || 386 || ppc64le)

package gradcodec

// unalignedLE is false here: payloads go through encoding/binary.
const unalignedLE = false
