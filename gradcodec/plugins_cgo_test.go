//go:build cgo

package gradcodec_test

// With cgo, the generic tests of this package (every codec of Codecs())
// run over the video plug-in's codecs too.
import _ "github.com/vccl/vccl/gradcodec/video"
