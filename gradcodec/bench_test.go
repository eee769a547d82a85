package gradcodec

import (
	"sync"
	"testing"
)

var benchTensor = sync.OnceValue(func() []float32 { return gradientLike(42, 2048, 2048) })

// BenchmarkEncode measures encode throughput per codec on a 4M-value
// gradient-like tensor (2048×2048) at 1.4 bits/value, after a first
// (rate-searching) frame.
//
//	go test ./gradcodec -run '^$' -bench . -benchtime 5x
func BenchmarkEncode(b *testing.B) {
	for _, codec := range Codecs() {
		b.Run(codec, func(b *testing.B) { benchCodec(b, codec, false) })
	}
}

// BenchmarkDecode measures decode throughput per codec on the same tensor.
func BenchmarkDecode(b *testing.B) {
	for _, codec := range Codecs() {
		b.Run(codec, func(b *testing.B) { benchCodec(b, codec, true) })
	}
}

func benchCodec(b *testing.B, codec string, decode bool) {
	x := benchTensor()
	sh := Shape{2048, 2048}
	enc, dec := mustEncoder(b, codec, 1.4), mustDecoder(b)
	fr, err := enc.Encode(nil, x, sh) // first frame: rate search, contexts
	if err != nil {
		b.Fatal(err)
	}
	y := make([]float32, len(x))
	if err := dec.Decode(y, fr); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(4 * len(x)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if decode {
			err = dec.Decode(y, fr)
		} else {
			fr, err = enc.Encode(fr[:0], x, sh)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if !decode {
		if err := dec.Decode(y, fr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(8*float64(len(fr))/float64(len(x)), "bits/value")
	b.ReportMetric(nmse(x, y), "NMSE")
	b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mvalues/s")
}
