//go:build cgo

package collective

// With cgo, the FFmpeg video codecs (h264, hevc) are linked into every
// program that uses this package, and h264 is the default codec. Without
// cgo, asking for them is an error naming the package that provides them.
import _ "github.com/vccl/vccl/gradcodec/video"
