//go:build cgo

package ring_test

// With cgo, the ring's tests run the video codecs too.
import _ "github.com/vccl/vccl/gradcodec/video"
