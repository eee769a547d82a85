package gradcodec

import (
	"bytes"
	"github.com/sbinet/npyio/npy"
	"os"
	"testing"
)

func TestZZDebug(t *testing.T) {
	b, _ := os.ReadFile("/tmp/grads/step0200_w2.npy")
	r, _ := npy.NewReader(bytes.NewReader(b))
	var x []float32
	r.Read(&x)
	sh := Shape{128, 256}
	for _, codec := range []string{"hevc", "h264"} {
		enc := mustEncoder(t, codec, 1.4).(*videoEncoder)
		l := planLayout(sh)
		enc.resize(l.W, l.FrameH)
		enc.pix = resize(enc.pix, l.W*l.FrameH*l.Frames)
		enc.scales = resize(enc.scales, scaleCount(enc.id, sh))
		for s := 38.0; s < 46; s += 0.25 {
			fr, err := enc.encodeAt(nil, x, sh, l, s)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s s %.2f bpv %.3f", codec, s, 8*float64(len(fr))/float64(len(x)))
		}
	}
}
