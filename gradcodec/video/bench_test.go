package video

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
)

// processCPU returns the CPU time used so far by the process (x265 encodes
// on threads of its own).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU returns the CPU time used so far by the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID), or 0 where that clock cannot be read.
func threadCPU() time.Duration {
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 3, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// BenchmarkVsBare runs vccl's video path and the bare codec on the same
// frames, preset and QP in the same loop, alternating, and reports both
// speeds (per CPU-second of the process, the steady figure on a shared
// machine) and their ratio:
//
//   - encode+EF: vccl = EncodeFeedback with the stream's residual and no
//     recon, as ring.GradCodec.Encode calls it on a reduce-scatter hop
//     (the residual added, scales, 8-bit levels, the encode, refit and
//     the new residual, frame and checksum: all that hop needs);
//     bare = libx264/libx265 encoding the very 8-bit pictures vccl made,
//     at the QP vccl chose, nothing kept.
//
//   - encode+EF+recon: the same with recon, as the allgather's owner
//     encodes its chunk (it keeps the reconstruction, which every other
//     rank decodes, so all ranks end bit-identical); the same bare
//     encode.
//
//   - decode: vccl = Decoder.Decode into float32 (checksum, scales,
//     libavcodec decode, dequantisation); bare = libavcodec's decoder on
//     the same access units, the picture left in the decoder's frame.
//
// x-bare, the ratio the targets are stated in, counts the CPU time of the
// whole process. For h264, whose libx264 (one thread) and libavcodec
// decoder run on the calling thread, x-bare-thread is the same ratio on
// that thread's CPU clock: it leaves out the Go runtime's own threads,
// mainly sysmon. Sysmon retakes the P of a cgo call longer than 10 ms (a
// 2048×2048 frame's) and, every P now idle, sleeps; the call's return
// wakes it to poll every 20 µs for a while, and those polls are charged to
// whatever runs next: vccl's refit after its own encode, and vccl's next
// quantisation after the bare encode. Measured from the other threads'
// schedstat, medians of 60 frames at 2048×2048 in 4 runs: 0.87–1.32 ms of
// CPU per frame in vccl's windows, 0.56–0.78 ms in the bare codec's.
//
//	go test ./gradcodec/video -run '^$' -bench VsBare -benchtime 10x
func BenchmarkVsBare(b *testing.B) {
	for _, codec := range []string{"h264", "hevc"} {
		// 2048×2048: a whole large tensor; 512×512: the ring's sub-chunk
		// (ring.DefaultSubChunkValues, 256 Ki values), the frame size of a
		// large allreduce; 256×784: the MNIST MLP's first layer.
		for _, sh := range []gradcodec.Shape{{Rows: 2048, Cols: 2048}, {Rows: 512, Cols: 512}, {Rows: 256, Cols: 784}} {
			x := codectest.GradientLike(42, sh.Rows, sh.Cols)
			name := fmt.Sprintf("%s/%dx%d", codec, sh.Rows, sh.Cols)
			b.Run(name+"/encode+EF", func(b *testing.B) { benchVsBare(b, codec, x, sh, false, false) })
			b.Run(name+"/encode+EF+recon", func(b *testing.B) { benchVsBare(b, codec, x, sh, true, false) })
			b.Run(name+"/decode", func(b *testing.B) { benchVsBare(b, codec, x, sh, false, true) })
		}
	}
}

func benchVsBare(b *testing.B, codec string, x []float32, sh gradcodec.Shape, withRecon, decode bool) {
	enc := codectest.MustEncoder(b, codec, 1.4).(*videoEncoder)
	dec := codectest.MustDecoder(b)
	ef := gradcodec.NewErrorFeedback()
	var recon []float32 // a reduce-scatter hop passes none
	if withRecon {
		recon = make([]float32, len(x))
	}
	var fr []byte
	var err error
	vccl := func() { // as ring.GradCodec.Encode does
		res, _ := ef.Carry("s", len(x))
		if fr, err = enc.EncodeFeedback(fr[:0], x, sh, recon, res); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ { // first frame: rate search; then steady state
		vccl()
	}
	// The bare codec gets the pictures of vccl's last frame at its QP.
	h, err := gradcodec.ParseHeader(fr)
	if err != nil {
		b.Fatal(err)
	}
	l := planLayout(sh)
	pix := append([]byte(nil), enc.pix...)
	nat, err := openNative(codec == "hevc", DefaultPreset(codec, "software"), l.W, l.FrameH, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer nat.close()
	fsize := l.W * l.FrameH
	bareEnc := func() {
		for f := 0; f < l.Frames; f++ {
			if _, err := nat.encodeBare(pix[f*fsize:(f+1)*fsize], h.QP); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Bare decoding: the access units of the frame as padded packets.
	cc, err := openDecoder(swDecoders[codec])
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Free()
	frame := astiav.AllocFrame()
	defer frame.Free()
	var pkts []*astiav.Packet
	defer func() {
		for _, p := range pkts {
			p.Free()
		}
	}()
	body := fr[gradcodec.HeaderSize+2*h.Scales+h.ZeroMap : h.Size-gradcodec.TrailerSize]
	for f := 0; f < l.Frames; f++ {
		n := binary.LittleEndian.Uint32(body)
		p := astiav.AllocPacket()
		if err := setPacket(p, body[4:4+n]); err != nil {
			b.Fatal(err)
		}
		pkts = append(pkts, p)
		body = body[4+n:]
	}
	bareDec := func() {
		for _, p := range pkts {
			if err := cc.SendPacket(p); err != nil {
				b.Fatal(err)
			}
			if err := cc.ReceiveFrame(frame); err != nil {
				b.Fatal(err)
			}
			frame.Unref()
		}
	}
	y := make([]float32, len(x))
	vcclDec := func() {
		if err := dec.Decode(y, fr); err != nil {
			b.Fatal(err)
		}
	}
	ours, bare := vccl, bareEnc
	if decode {
		ours, bare = vcclDec, bareDec
	}
	ours()
	bare()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var tOurs, tBare, thOurs, thBare time.Duration
	trials := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0, h0 := processCPU(), threadCPU()
		ours()
		trials += enc.last.Trials
		t1, h1 := processCPU(), threadCPU()
		bare()
		t2, h2 := processCPU(), threadCPU()
		tOurs += t1 - t0
		tBare += t2 - t1
		thOurs += h1 - h0
		thBare += h2 - h1
	}
	b.StopTimer()
	n := float64(len(x)) * float64(b.N)
	b.ReportMetric(8*float64(len(fr))/float64(len(x)), "bits/value")
	b.ReportMetric(float64(h.QP), "QP")
	b.ReportMetric(n/tOurs.Seconds()/1e6, "vccl-Mvalues/s")
	b.ReportMetric(n/tBare.Seconds()/1e6, "bare-Mvalues/s")
	b.ReportMetric(tBare.Seconds()/tOurs.Seconds(), "x-bare")
	if codec == "h264" && thOurs > 0 && thBare > 0 {
		b.ReportMetric(thBare.Seconds()/thOurs.Seconds(), "x-bare-thread")
	}
	if !decode {
		b.ReportMetric(float64(trials)/float64(b.N), "encodes/frame")
	}
}

// BenchmarkThreads encodes a 2048×2048 gradient with h264 (EncodeRecon)
// on 1 and 2 codec threads: wall-clock Mvalues/s, the figure that threads
// change (measure on an otherwise idle machine).
//
//	go test ./gradcodec/video -run '^$' -bench Threads -benchtime 10x
func BenchmarkThreads(b *testing.B) {
	sh := gradcodec.Shape{Rows: 2048, Cols: 2048}
	x := codectest.GradientLike(42, sh.Rows, sh.Cols)
	for _, codec := range []string{"h264", "hevc"} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads%d", codec, threads), func(b *testing.B) {
				enc, err := gradcodec.NewEncoder(gradcodec.Options{Codec: codec, Backend: "software", BitsPerValue: 1.4, Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				defer enc.Close()
				re := enc.(gradcodec.ReconEncoder)
				recon := make([]float32, len(x))
				var fr []byte
				for i := 0; i < 2; i++ {
					if fr, err = re.EncodeRecon(fr[:0], x, sh, recon); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if fr, err = re.EncodeRecon(fr[:0], x, sh, recon); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mvalues/s")
				b.ReportMetric(8*float64(len(fr))/float64(len(x)), "bits/value")
			})
		}
	}
}
