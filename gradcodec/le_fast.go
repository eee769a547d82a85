//go:build amd64 || arm64 || 386 || ppc64le

package gradcodec

// unalignedLE: this machine is little-endian and loads and stores 16- and
// 32-bit values at any address, so payloads are reinterpreted in place.
const unalignedLE = true
