package video

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
)

// RMSMultiple is k of the video codecs' per-row scale min(k·RMS, max|x|)
// before rate control stretches it by up to 2^(1/6) between integer QPs and
// the least-squares refit after decoding.
const RMSMultiple = 8

// MinVideoValues is the smallest tensor the video encoders put in a video
// frame. Below it the parameter sets and headers alone exceed any sensible
// rate and the codec delivers nothing (biases of 256 values decoded as all
// zeros at 2.6 bits/value with libx264), so h264/hevc Encoders send such
// tensors as int8 frames (about 8–9 bits/value, NMSE ~1e-4), which every
// Decoder reads.
const MinVideoValues = 1024

// encCtx is an open encoder context for one size and QP.
type encCtx struct {
	w, h int
	qp   int
	cc   *astiav.CodecContext
	pts  int64
}

// maxCachedContexts bounds the open contexts kept per Encoder (one per
// size and QP); maxRateStates bounds the per-shape rate control states.
const (
	maxCachedContexts = 4
	maxRateStates     = 64
)

// videoEncoder encodes through libx264/libx265 or NVENC.
type videoEncoder struct {
	codec  string // "h264" or "hevc"
	id     uint8
	auto   bool                   // backend "auto": NVENC may fall back to software
	small  gradcodec.ReconEncoder // int8 frames for tensors under MinVideoValues
	preset string                 // gradcodec.Options.Preset as given
	cfg    encoderConfig
	target float64

	ctxs    []*encCtx // most recently used first
	frame   *astiav.Frame
	pkt     *astiav.Packet
	pix     []byte
	scales  []uint16
	bufs    [2][]byte
	rcs     map[gradcodec.Shape]*rateControl // per tensor shape
	dec     *videoDecoder                    // decodes own frames for the scale refit
	fscales []float32
	last    Stats
	closed  bool
}

// Stats describes the last frame a video Encoder produced.
type Stats struct {
	QP           int     // quantization parameter of the frame
	Trials       int     // encodes it took (rate search)
	BitsPerValue float64 // whole-frame cost
}

// LastStats returns statistics of the last frame.
func (e *videoEncoder) LastStats() Stats { return e.last }

func (e *videoEncoder) qpOf(s float64) int { qp, _ := controlToQP(s); return qp }

var _ gradcodec.Encoder = (*videoEncoder)(nil)

func newVideoEncoder(opts gradcodec.Options) (*videoEncoder, error) {
	quietFFmpeg()
	if err := packetLayoutOK(); err != nil {
		return nil, err
	}
	e := &videoEncoder{codec: opts.Codec, id: codecID[opts.Codec], target: opts.BitsPerValue}
	if e.target <= 0 {
		e.target = 1.4
	}
	if math.IsNaN(e.target) || math.IsInf(e.target, 0) || e.target > 16 {
		return nil, fmt.Errorf("gradcodec: %s: bits per value %v out of range (0, 16]", opts.Codec, opts.BitsPerValue)
	}
	backend := opts.Backend
	switch backend {
	case "", "auto":
		e.auto = true
		e.cfg.hw = hwEncoderAvailable(opts.Codec)
	case "nvenc":
		if !hwEncoderAvailable(opts.Codec) {
			return nil, fmt.Errorf("gradcodec: %s backend nvenc: %w: %s does not open on this machine (no NVIDIA driver or no NVENC engine); available: software (%s)",
				opts.Codec, gradcodec.ErrBackendUnavailable, hwEncoders[opts.Codec], swEncoders[opts.Codec])
		}
		e.cfg.hw = true
	case "software":
		if astiav.FindEncoderByName(swEncoders[opts.Codec]) == nil {
			return nil, fmt.Errorf("gradcodec: %s backend software: %w: %s is not in this FFmpeg build", opts.Codec, gradcodec.ErrBackendUnavailable, swEncoders[opts.Codec])
		}
	default:
		return nil, fmt.Errorf("gradcodec: %w: backend %q, want auto, nvenc or software", gradcodec.ErrBackendUnavailable, backend)
	}
	if e.cfg.hw {
		e.cfg.encName = hwEncoders[opts.Codec]
		backend = "nvenc"
	} else {
		e.cfg.encName = swEncoders[opts.Codec]
		backend = "software"
	}
	e.preset = opts.Preset
	e.cfg.preset = opts.Preset
	if e.cfg.preset == "" {
		e.cfg.preset = DefaultPreset(opts.Codec, backend)
	}
	// Open one context now so that a bad preset fails here, not mid-training.
	err := probeEncoder(e.cfg)
	if err != nil && e.cfg.hw && e.auto {
		e.useSoftware()
		err = probeEncoder(e.cfg)
	}
	if err != nil {
		return nil, err
	}
	e.rcs = map[gradcodec.Shape]*rateControl{}
	e.dec = newVideoDecoder(e.codec, "software")
	e.pkt = astiav.AllocPacket()
	return e, nil
}

// Name returns the codec name.
func (e *videoEncoder) Name() string { return e.codec }

// useSoftware switches an "auto" encoder from NVENC to libx264/libx265
// (same wire format), e.g. when NVENC refuses a picture size.
func (e *videoEncoder) useSoftware() {
	e.cfg.hw = false
	e.cfg.encName = swEncoders[e.codec]
	e.cfg.preset = e.preset
	if e.cfg.preset == "" {
		e.cfg.preset = DefaultPreset(e.codec, "software")
	}
	w, h := e.cfg.w, e.cfg.h
	e.dropContexts()
	e.cfg.w, e.cfg.h = w, h
}

// Backend returns the encoder in use, e.g. "libx265" or "hevc_nvenc".
func (e *videoEncoder) Backend() string { return e.cfg.encName }

// Close frees the codec contexts. It is idempotent.
func (e *videoEncoder) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	e.dropContexts()
	if e.dec != nil {
		_ = e.dec.Close()
		e.dec = nil
	}
	if e.pkt != nil {
		e.pkt.Free()
		e.pkt = nil
	}
	return nil
}

func (e *videoEncoder) dropContexts() {
	for _, c := range e.ctxs {
		c.cc.Free()
	}
	e.ctxs = nil
	if e.frame != nil {
		e.frame.Free()
		e.frame = nil
	}
}

// context returns an open context for qp at the current size.
func (e *videoEncoder) context(qp int) (*encCtx, error) {
	for i, c := range e.ctxs {
		if c.qp == qp && c.w == e.cfg.w && c.h == e.cfg.h {
			copy(e.ctxs[1:i+1], e.ctxs[:i])
			e.ctxs[0] = c
			return c, nil
		}
	}
	cfg := e.cfg
	cfg.qp = qp
	cc, err := openEncoder(cfg)
	if err != nil && e.cfg.hw && e.auto {
		e.useSoftware()
		if err := e.resize(cfg.w, cfg.h); err != nil {
			return nil, err
		}
		cfg = e.cfg
		cfg.qp = qp
		cc, err = openEncoder(cfg)
	}
	if err != nil {
		return nil, err
	}
	c := &encCtx{w: cfg.w, h: cfg.h, qp: qp, cc: cc}
	if len(e.ctxs) == maxCachedContexts {
		e.ctxs[len(e.ctxs)-1].cc.Free()
		e.ctxs = e.ctxs[:len(e.ctxs)-1]
	}
	e.ctxs = append([]*encCtx{c}, e.ctxs...)
	return c, nil
}

func (e *videoEncoder) resize(w, h int) error {
	if w == e.cfg.w && h == e.cfg.h && e.frame != nil {
		return nil
	}
	if e.frame != nil {
		e.frame.Free()
		e.frame = nil
	}
	e.cfg.w, e.cfg.h = w, h
	f := astiav.AllocFrame()
	f.SetWidth(w)
	f.SetHeight(h)
	if e.cfg.hw {
		f.SetPixelFormat(astiav.PixelFormatYuv420P)
	} else {
		f.SetPixelFormat(astiav.PixelFormatGray8)
	}
	if err := f.AllocBuffer(0); err != nil {
		f.Free()
		return fmt.Errorf("gradcodec: allocating %dx%d frame: %w", w, h, err)
	}
	e.frame = f
	return nil
}

// Encode appends to dst the frame holding src laid out as shape.
func (e *videoEncoder) Encode(dst []byte, src []float32, shape gradcodec.Shape) ([]byte, error) {
	return e.EncodeRecon(dst, src, shape, nil)
}

// EncodeRecon is Encode that also writes into recon what every Decoder
// yields for the frame (recon may be nil).
func (e *videoEncoder) EncodeRecon(dst []byte, src []float32, shape gradcodec.Shape, recon []float32) ([]byte, error) {
	if recon != nil && len(recon) != len(src) {
		return dst, fmt.Errorf("%s: %w: recon has %d values, src %d", e.codec, gradcodec.ErrShapeMismatch, len(recon), len(src))
	}
	if e.closed {
		return dst, fmt.Errorf("gradcodec: %s encoder is closed", e.codec)
	}
	if err := gradcodec.CheckShape(e.codec, src, shape); err != nil {
		return dst, err
	}
	if err := gradcodec.CheckFinite(e.codec, src); err != nil {
		return dst, err
	}
	n := shape.Len()
	if n == 0 {
		var w gradcodec.FrameWriter
		w.Begin(dst, e.id, shape, 0, 0, 0, 0)
		return w.Finish(), nil
	}
	if n < MinVideoValues {
		// Too small for a video frame to carry anything: send int8.
		if e.small == nil {
			enc, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "int8"})
			if err != nil {
				return dst, err
			}
			e.small = enc.(gradcodec.ReconEncoder)
		}
		return e.small.EncodeRecon(dst, src, shape, recon)
	}
	l := planLayout(shape)
	if err := e.resize(l.W, l.FrameH); err != nil {
		return dst, err
	}
	e.pix = resize(e.pix, l.W*l.FrameH*l.Frames)
	e.scales = resize(e.scales, gradcodec.ScaleGroups(shape))
	overhead := gradcodec.HeaderSize + gradcodec.TrailerSize + 2*len(e.scales) + gradcodec.ZeroMapSize(shape) + 4*l.Frames
	// Payload bits per value to aim for. Where the fixed costs alone exceed
	// the target (tiny tensors) the target cannot be met; spend a quarter of
	// it on the payload anyway.
	tp := math.Max(e.target-8*float64(overhead)/float64(n), e.target/4)
	rate := func(b []byte) float64 { return 8 * float64(len(b)-overhead) / float64(n) }

	rc := e.rcs[shape]
	if rc == nil {
		if len(e.rcs) >= maxRateStates {
			clear(e.rcs)
		}
		rc = newRateControl(e.codec, e.target)
		e.rcs[shape] = rc
	}
	s := rc.s
	cur := 0
	var err error
	e.bufs[cur], err = e.encodeAt(e.bufs[cur][:0], src, shape, l, s)
	if err != nil {
		return dst, err
	}
	r := rate(e.bufs[cur])
	best, bestS, bestR := cur, s, r
	// A quick search on the first frame of a stream (secant steps, up to
	// three more encodes), and one retry when a later frame is far off.
	tries, weight := 1, 0.5
	if !rc.started {
		tries, weight = 4, 1
	} else if math.Abs(math.Log2(r/tp)) > math.Log2(1.3) {
		tries = 2
	}
	trials := 1
	for t := 1; t < tries && math.Abs(math.Log2(bestR/tp)) > math.Log2(1.03); t++ {
		trials++
		rc.observe(s, r, weight)
		s = rc.next(s, r, tp)
		cur = 1 - best
		e.bufs[cur], err = e.encodeAt(e.bufs[cur][:0], src, shape, l, s)
		if err != nil {
			return dst, err
		}
		r = rate(e.bufs[cur])
		if math.Abs(math.Log2(r/tp)) < math.Abs(math.Log2(bestR/tp)) {
			best, bestS, bestR = cur, s, r
		}
	}
	rc.observe(s, r, weight)
	rc.s = rc.next(bestS, bestR, tp)
	rc.started = true
	e.last = Stats{QP: e.qpOf(bestS), Trials: trials, BitsPerValue: 8 * float64(len(e.bufs[best])) / float64(n)}
	if err := e.refit(e.bufs[best], src, shape, l, recon); err != nil {
		return dst, err
	}
	return append(dst, e.bufs[best]...), nil
}

// refit decodes frame locally and replaces each scale by the least-squares
// one, 127·Σx·q/Σq² over the group's decoded levels q: the decoded values
// become the best multiple of what the codec delivered, so no row decodes
// worse than zeros (NMSE <= 1) and the codec's error shrinks a little. The
// scales sit outside the bitstream, so the rate does not change. recon, if
// not nil, receives what every decoder will yield.
func (e *videoEncoder) refit(frame []byte, src []float32, shape gradcodec.Shape, l picLayout, recon []float32) error {
	h, err := gradcodec.ParseHeader(frame)
	if err != nil {
		return fmt.Errorf("gradcodec: internal: own frame: %w", err)
	}
	zoff := gradcodec.HeaderSize + 2*h.Scales
	zmap := frame[zoff : zoff+h.ZeroMap]
	if err := e.dec.pixels(h, l, frame[zoff+h.ZeroMap:h.Size-gradcodec.TrailerSize]); err != nil {
		return fmt.Errorf("gradcodec: %s: decoding own frame: %w", e.codec, err)
	}
	pix := e.dec.pix
	g := gradcodec.ScaleGroupRows(shape)
	e.fscales = resize(e.fscales, h.Scales)
	for i := range e.fscales {
		var dot, qq float64
		for r := i * g; r < min((i+1)*g, shape.Rows); r++ {
			if len(zmap) > 0 && zmap[r/8]&(1<<(r%8)) != 0 {
				continue
			}
			row := src[r*shape.Cols : (r+1)*shape.Cols]
			in := pix[r*l.Stride : r*l.Stride+shape.Cols]
			for c, p := range in {
				q := float64(int32(p) - 128)
				dot += float64(row[c]) * q
				qq += q * q
			}
		}
		old := binary.LittleEndian.Uint16(frame[gradcodec.HeaderSize+2*i:])
		var sc uint16
		switch {
		case old == 0 || qq == 0:
			sc = old // nothing to fit: the group decodes as zeros either way
		case dot > 0:
			sc = gradcodec.ToBF16(float32(127 * dot / qq))
			if v := gradcodec.FromBF16(sc); math.IsInf(float64(v), 0) || v == 0 {
				sc = old
			}
		}
		binary.LittleEndian.PutUint16(frame[gradcodec.HeaderSize+2*i:], sc)
		e.fscales[i] = gradcodec.FromBF16(sc)
	}
	gradcodec.FixChecksum(frame, h.Size)
	if recon != nil {
		readPicture(recon, pix, shape, l, e.fscales)
		gradcodec.ApplyZeroMap(recon, shape, zmap)
	}
	return nil
}

// encodeAt encodes src with control value s, appending the frame to dst.
func (e *videoEncoder) encodeAt(dst []byte, src []float32, shape gradcodec.Shape, l picLayout, s float64) ([]byte, error) {
	qp, mult := controlToQP(s)
	gradcodec.ComputeScales(e.scales, src, shape, RMSMultiple, mult)
	fillPicture(e.pix, src, shape, l, e.scales)
	ctx, err := e.context(qp)
	if err != nil {
		return dst, err
	}
	var w gradcodec.FrameWriter
	w.Begin(dst, e.id, shape, l.W, l.FrameH, l.Frames, qp)
	w.Buf = gradcodec.PutScales(w.Buf, e.scales)
	w.Buf = gradcodec.AppendZeroMap(w.Buf, src, shape)
	fsize := l.W * l.FrameH
	for f := 0; f < l.Frames; f++ {
		if err := writeLuma(e.frame, e.pix[f*fsize:(f+1)*fsize], l.W, l.FrameH); err != nil {
			return dst, err
		}
		e.frame.SetPts(ctx.pts)
		e.frame.SetPictureType(astiav.PictureTypeI)
		ctx.pts++
		lenAt := len(w.Buf)
		w.Buf = append(w.Buf, 0, 0, 0, 0)
		if err := ctx.cc.SendFrame(e.frame); err != nil {
			e.forget(ctx)
			ctx.cc.Free()
			return dst, fmt.Errorf("gradcodec: %s encoding frame %d: %w", e.cfg.encName, f, err)
		}
		got := 0
		for {
			err := ctx.cc.ReceivePacket(e.pkt)
			if errors.Is(err, astiav.ErrEagain) {
				break
			}
			if err != nil {
				e.forget(ctx)
				ctx.cc.Free()
				return dst, fmt.Errorf("gradcodec: %s receiving frame %d: %w", e.cfg.encName, f, err)
			}
			w.Buf = appendWithoutSEI(w.Buf, packetBytes(e.pkt), e.id)
			e.pkt.Unref()
			got++
		}
		if got == 0 {
			// The encoder held the picture back: drain it and retire the
			// context (a drained context cannot take more frames).
			e.forget(ctx)
			_ = ctx.cc.SendFrame(nil)
			for {
				err := ctx.cc.ReceivePacket(e.pkt)
				if err != nil {
					break
				}
				w.Buf = appendWithoutSEI(w.Buf, packetBytes(e.pkt), e.id)
				e.pkt.Unref()
				got++
			}
			ctx.cc.Free()
			if got == 0 {
				return dst, fmt.Errorf("gradcodec: %s produced no packet for frame %d", e.cfg.encName, f)
			}
			if f+1 < l.Frames {
				if ctx, err = e.context(qp); err != nil {
					return dst, err
				}
			}
		}
		binary.LittleEndian.PutUint32(w.Buf[lenAt:], uint32(len(w.Buf)-lenAt-4))
	}
	return w.Finish(), nil
}

// forget removes ctx from the cache without freeing it.
func (e *videoEncoder) forget(ctx *encCtx) {
	for i, c := range e.ctxs {
		if c == ctx {
			e.ctxs = append(e.ctxs[:i], e.ctxs[i+1:]...)
			return
		}
	}
}

// resize returns s with length n, reusing its array when it is big enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
