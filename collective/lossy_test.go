package collective

import "github.com/vccl/vccl/gradcodec"

// lossyCodec is the compressed codec the tests of this package run: h264
// where the video plug-in is linked (cgo), else int8. The tests' smooth
// data and their error bounds suit these two; the tensor codec has tests of
// its own on gradient-like data.
var lossyCodec = func() string {
	if gradcodec.Registered("h264") {
		return "h264"
	}
	return "int8"
}()
