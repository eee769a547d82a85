package video

import (
	"fmt"

	"github.com/vccl/vccl/gradcodec"
)

// codecID maps the codec names of this package to their wire ids.
var codecID = map[string]uint8{"h264": gradcodec.IDH264, "hevc": gradcodec.IDHEVC}

// init registers h264 and hevc with gradcodec.
func init() {
	for _, name := range []string{"h264", "hevc"} {
		name := name
		gradcodec.Register(gradcodec.Codec{
			Name:        name,
			ID:          codecID[name],
			Scaled:      true,
			CheckHeader: checkHeader,
			NewEncoder: func(opts gradcodec.Options) (gradcodec.Encoder, error) {
				opts.Codec = name
				return newVideoEncoder(opts)
			},
			NewPayloadDecoder: func(backend string) (gradcodec.PayloadDecoder, error) {
				return newVideoDecoder(name, backend), nil
			},
			HardwareDecoder: func() bool { return hwDecoderAvailable(name) },
		})
	}
}

// checkHeader verifies that the picture fields of a video frame are the
// deterministic layout of its shape.
func checkHeader(h gradcodec.Header) error {
	if h.Shape.Len() == 0 {
		if h.Payload != 0 || h.NumFrames != 0 {
			return fmt.Errorf("%w: empty tensor with %d payload bytes", gradcodec.ErrBadFrame, h.Payload)
		}
		return nil
	}
	l := planLayout(h.Shape)
	if l.W != h.PicWidth || l.FrameH != h.PicHeight || l.Frames != h.NumFrames {
		return fmt.Errorf("%w: picture %dx%d in %d frames does not match shape %dx%d (want %dx%d in %d)",
			gradcodec.ErrBadFrame, h.PicWidth, h.PicHeight, h.NumFrames, h.Shape.Rows, h.Shape.Cols, l.W, l.FrameH, l.Frames)
	}
	return nil
}
