package gradcodec_test

import (
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
)

var (
	fuzzMu  sync.Mutex
	fuzzDec *gradcodec.Decoder
)

// FuzzDecode feeds arbitrary bytes to Decoder.Decode. With fixCRC the
// checksum is rewritten first, so mutations reach the payload decoders
// (including FFmpeg's). Decode must return nil with finite values, or an
// error wrapping ErrBadFrame or ErrShapeMismatch; never panic or hang.
func FuzzDecode(f *testing.F) {
	for _, fr := range codectest.SmallFrames(f) {
		f.Add(fr, false)
		f.Add(fr, true)
	}
	f.Add([]byte("VCGC\x01\x05"), true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		fuzzMu.Lock()
		defer fuzzMu.Unlock()
		if fuzzDec == nil {
			d, err := gradcodec.NewDecoder("software")
			if err != nil {
				t.Fatal(err)
			}
			fuzzDec = d
		}
		if fixCRC {
			codectest.FixChecksum(b)
		}
		n := 1024
		if h, err := gradcodec.ParseHeader(b); err == nil {
			if h.Shape.Len() > 1<<20 {
				return // the caller sizes dst; stay small
			}
			n = h.Shape.Len()
		}
		dst := make([]float32, n)
		err := fuzzDec.Decode(dst, b)
		if err != nil {
			if !errors.Is(err, gradcodec.ErrBadFrame) && !errors.Is(err, gradcodec.ErrShapeMismatch) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d decodes to %v", i, v)
			}
		}
	})
}
