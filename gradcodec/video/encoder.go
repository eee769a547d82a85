package video

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
)

// RMSMultiple is k of the video codecs' per-row scale min(k·RMS, max|x|)
// before rate control stretches it by up to 2^(1/6) between integer QPs and
// the least-squares refit after encoding.
const RMSMultiple = 8

// MinVideoValues is the smallest tensor the video encoders put in a video
// frame. Below it the parameter sets and headers alone exceed any sensible
// rate and the codec delivers nothing (biases of 256 values decoded as all
// zeros at 2.6 bits/value with libx264), so h264/hevc Encoders send such
// tensors as int8 frames (about 8–9 bits/value, NMSE ~1e-4), which every
// Decoder reads.
const MinVideoValues = 1024

// encCtx is an open encoder context for one picture size: a libx264/libx265
// context (any QP, per picture), or an NVENC context of libavcodec (one QP).
type encCtx struct {
	w, h int
	qp   int                  // the QP of an NVENC context
	cc   *astiav.CodecContext // NVENC through libavcodec, or nil
	nat  *nativeEncoder       // libx264/libx265, or nil
	pts  int64
}

func (c *encCtx) close() {
	if c.cc != nil {
		c.cc.Free()
		c.cc = nil
	}
	if c.nat != nil {
		c.nat.close()
		c.nat = nil
	}
}

// maxCachedContexts bounds the open contexts kept per Encoder (one per
// picture size for libx264/libx265, per size and QP for NVENC);
// maxRateStates bounds the rate control states (per stream and shape).
const (
	maxCachedContexts = 4
	maxRateStates     = 1024
)

// rateKey names a rate control state: the stream (see SetStream) and the
// tensor shape.
type rateKey struct {
	stream string
	shape  gradcodec.Shape
}

// trial is one encode of a tensor at one control value.
type trial struct {
	payload []byte   // NumFrames records of [u32 length][access unit]
	scales  []uint16 // scales the pictures were quantised with
	// rec is the encoder's reconstruction (libx264/libx265 only): tensor
	// row r (in RowMode; else pixel i of the packed pictures at i) at
	// rec[r*recStride:]. It is either own, the pictures copied out (W per
	// row), or, for a one-frame tensor, the encoder's picture read in place
	// (live), valid until that context encodes again.
	rec       []byte
	recStride int
	live      bool
	own       []byte
	native    bool // rec is valid
	qp        int
}

// keep copies a live reconstruction into t's own buffer, before the
// context that holds it encodes again.
func (t *trial) keep(l picLayout) {
	if !t.live {
		return
	}
	t.own = resize(t.own, l.W*l.FrameH*l.Frames)
	copyPlane(t.own, l.W, t.rec, t.recStride, l.W, l.FrameH)
	t.rec, t.recStride, t.live = t.own, l.W, false
}

// copyPlane copies h rows of w bytes from src (row stride ss) to dst (row
// stride ds).
func copyPlane(dst []byte, ds int, src []byte, ss, w, h int) {
	for y := 0; y < h; y++ {
		copy(dst[y*ds:y*ds+w], src[y*ss:y*ss+w])
	}
}

// videoEncoder encodes through libx264/libx265 or NVENC.
type videoEncoder struct {
	codec  string // "h264" or "hevc"
	id     uint8
	auto   bool                      // backend "auto": NVENC may fall back to software
	small  gradcodec.ResidualEncoder // int8 frames for tensors under MinVideoValues
	preset string                    // gradcodec.Options.Preset as given
	cfg    encoderConfig
	target float64

	ctxs   []*encCtx // most recently used first
	frame  *astiav.Frame
	pkt    *astiav.Packet
	pix    []byte
	zmap   []byte
	sum    []float32 // input plus residual for the int8 frames of EncodeFeedback
	rec    []float32 // their reconstruction when the caller passes none
	trials [2]trial
	rcs    map[rateKey]*rateControl // per stream and tensor shape
	stream string                   // see SetStream
	dec    *videoDecoder            // NVENC only: decodes own frames for the refit
	last   Stats
	closed bool
}

// Stats describes the last frame a video Encoder produced.
type Stats struct {
	QP           int     // quantization parameter of the frame
	Trials       int     // encodes it took (rate search)
	BitsPerValue float64 // whole-frame cost
}

// LastStats returns statistics of the last frame.
func (e *videoEncoder) LastStats() Stats { return e.last }

var (
	_ gradcodec.FeedbackEncoder = (*videoEncoder)(nil)
	_ gradcodec.StreamEncoder   = (*videoEncoder)(nil)
)

// SetStream makes the following frames part of stream key, with its own
// rate control state; the codec contexts are shared (see
// gradcodec.StreamEncoder).
func (e *videoEncoder) SetStream(key string) { e.stream = key }

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
	if opts.Threads < 0 || opts.Threads > 64 {
		return nil, fmt.Errorf("gradcodec: %s: %d threads out of range [0, 64]", opts.Codec, opts.Threads)
	}
	e.cfg.threads = max(opts.Threads, 1)
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
	e.rcs = map[rateKey]*rateControl{}
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
	e.dropContexts()
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
	if e.small != nil {
		_ = e.small.Close()
	}
	return nil
}

func (e *videoEncoder) dropContexts() {
	for _, c := range e.ctxs {
		c.close()
	}
	e.ctxs = nil
	if e.frame != nil {
		e.frame.Free()
		e.frame = nil
	}
}

// context returns an open context for a w×h picture at qp.
func (e *videoEncoder) context(w, h, qp int) (*encCtx, error) {
	for i, c := range e.ctxs {
		if c.w == w && c.h == h && (c.nat != nil || c.qp == qp) {
			copy(e.ctxs[1:i+1], e.ctxs[:i])
			e.ctxs[0] = c
			return c, nil
		}
	}
	c := &encCtx{w: w, h: h, qp: qp}
	var err error
	if e.cfg.hw {
		cfg := e.cfg
		cfg.w, cfg.h, cfg.qp = w, h, qp
		c.cc, err = openEncoder(cfg)
		if err != nil && e.auto {
			e.useSoftware()
			err = nil
		}
	}
	if err == nil && !e.cfg.hw {
		c.nat, err = openNative(e.codec == "hevc", e.cfg.preset, w, h, e.cfg.threads)
	}
	if err != nil {
		return nil, err
	}
	if len(e.ctxs) == maxCachedContexts {
		e.ctxs[len(e.ctxs)-1].close()
		e.ctxs = e.ctxs[:len(e.ctxs)-1]
	}
	e.ctxs = append([]*encCtx{c}, e.ctxs...)
	return c, nil
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

// Encode appends to dst the frame holding src laid out as shape.
func (e *videoEncoder) Encode(dst []byte, src []float32, shape gradcodec.Shape) ([]byte, error) {
	return e.EncodeRecon(dst, src, shape, nil)
}

// EncodeRecon is Encode that also writes into recon what every Decoder
// yields for the frame (recon may be nil).
//
// Per frame, beyond the codec: one fused pass over src (finite check,
// scales, 8-bit levels), the encode (libx264/libx265 hand back their
// reconstruction; NVENC frames are decoded, on NVDEC where it opens), and
// one pass for the scale refit and recon. In steady state a frame is
// encoded once; only a stream's first frame of a shape, or one more than
// 30% off the target rate, is encoded again.
func (e *videoEncoder) EncodeRecon(dst []byte, src []float32, shape gradcodec.Shape, recon []float32) ([]byte, error) {
	return e.encode(dst, src, shape, recon, nil, false)
}

// EncodeResidual is EncodeRecon that also writes src − recon into residual
// in the pass that writes recon.
func (e *videoEncoder) EncodeResidual(dst []byte, src []float32, shape gradcodec.Shape, recon, residual []float32) ([]byte, error) {
	if recon == nil || len(residual) != len(src) {
		return dst, fmt.Errorf("%s: %w: EncodeResidual needs recon and a residual of %d values (has %d)", e.codec, gradcodec.ErrShapeMismatch, len(src), len(residual))
	}
	return e.encode(dst, src, shape, recon, residual, false)
}

// EncodeFeedback encodes src + residual and leaves the new residual in
// residual (gradcodec.FeedbackEncoder): the first quantisation pass adds
// the residual group by group while the group is in cache and keeps the
// sum in residual, which the refit then overwrites with the new residual.
// With recon nil the refit writes the residual alone (4 bytes a value
// less traffic; the same frame and residual).
func (e *videoEncoder) EncodeFeedback(dst []byte, src []float32, shape gradcodec.Shape, recon, residual []float32) ([]byte, error) {
	if len(residual) != len(src) {
		return dst, fmt.Errorf("%s: %w: EncodeFeedback needs a residual of %d values (has %d)", e.codec, gradcodec.ErrShapeMismatch, len(src), len(residual))
	}
	return e.encode(dst, src, shape, recon, residual, true)
}

// encode encodes src (src + residual when add; residual then receives the
// sum at once and the new residual at the end).
func (e *videoEncoder) encode(dst []byte, src []float32, shape gradcodec.Shape, recon, residual []float32, add bool) ([]byte, error) {
	if recon != nil && len(recon) != len(src) {
		return dst, fmt.Errorf("%s: %w: recon has %d values, src %d", e.codec, gradcodec.ErrShapeMismatch, len(recon), len(src))
	}
	if e.closed {
		return dst, fmt.Errorf("gradcodec: %s encoder is closed", e.codec)
	}
	if err := gradcodec.CheckShape(e.codec, src, shape); err != nil {
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
			e.small = enc.(gradcodec.ResidualEncoder)
		}
		if add {
			e.sum = resize(e.sum, n)
			kern.AddTo2(e.sum, src, residual)
			src = e.sum
		}
		if residual != nil {
			if recon == nil { // EncodeResidual needs one
				e.rec = resize(e.rec, n)
				recon = e.rec
			}
			return e.small.EncodeResidual(dst, src, shape, recon, residual)
		}
		return e.small.EncodeRecon(dst, src, shape, recon)
	}
	l := planLayout(shape)
	e.pix = resize(e.pix, l.W*l.FrameH*l.Frames)
	nz := gradcodec.ZeroMapSize(shape)
	var zmap []byte
	if nz > 0 {
		e.zmap = resize(e.zmap, nz)
		zmap = e.zmap
	}
	overhead := gradcodec.HeaderSize + gradcodec.TrailerSize + 2*gradcodec.ScaleGroups(shape) + nz + 4*l.Frames
	// Payload bits per value to aim for. Where the fixed costs alone exceed
	// the target (tiny tensors) the target cannot be met; spend a quarter of
	// it on the payload anyway.
	tp := math.Max(e.target-8*float64(overhead)/float64(n), e.target/4)
	rate := func(t *trial) float64 { return 8 * float64(len(t.payload)-4*l.Frames) / float64(n) }

	rk := rateKey{e.stream, shape}
	rc := e.rcs[rk]
	if rc == nil {
		if len(e.rcs) >= maxRateStates {
			clear(e.rcs)
		}
		rc = newRateControl(e.codec, e.target)
		e.rcs[rk] = rc
	}
	s := rc.s
	cur := 0
	var sum []float32 // the residual to add in the first quantisation
	if add {
		sum = residual
	}
	for i := range e.trials { // reconstructions of earlier calls are gone
		e.trials[i].live, e.trials[i].rec = false, nil
	}
	if err := e.encodeAt(&e.trials[cur], src, sum, shape, l, s, zmap); err != nil {
		return dst, err
	}
	if add {
		src = residual // now src + residual
	}
	r := rate(&e.trials[cur])
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
		if err := e.encodeAt(&e.trials[cur], src, nil, shape, l, s, zmap); err != nil {
			return dst, err
		}
		r = rate(&e.trials[cur])
		if math.Abs(math.Log2(r/tp)) < math.Abs(math.Log2(bestR/tp)) {
			best, bestS, bestR = cur, s, r
		}
	}
	rc.observe(s, r, weight)
	rc.s = rc.next(bestS, bestR, tp)
	rc.started = true

	t := &e.trials[best]
	pix, stride := t.rec, t.recStride
	if !l.RowMode {
		stride = l.Stride // flat: packed pictures (see encodeAt)
	}
	if !t.native {
		if e.dec == nil {
			e.dec = newVideoDecoder(e.codec, "auto") // NVDEC where it opens
		}
		if err := e.dec.pixels(l, t.payload); err != nil {
			return dst, fmt.Errorf("gradcodec: %s: decoding own frame: %w", e.codec, err)
		}
		pix, stride = e.dec.pix, l.Stride
	}
	refitRecon(recon, residual, t.scales, zmap, pix, stride, src, shape, l)
	var w gradcodec.FrameWriter
	w.Begin(dst, e.id, shape, l.W, l.FrameH, l.Frames, t.qp)
	w.Buf = gradcodec.PutScales(w.Buf, t.scales)
	w.Buf = append(w.Buf, zmap...)
	w.Buf = append(w.Buf, t.payload...)
	out := w.Finish()
	e.last = Stats{QP: t.qp, Trials: trials, BitsPerValue: 8 * float64(len(out)-len(dst)) / float64(n)}
	return out, nil
}

// encodeAt quantises src (src + add, summed into add, when add is not nil)
// with control value s and encodes it into t.
func (e *videoEncoder) encodeAt(t *trial, src, add []float32, shape gradcodec.Shape, l picLayout, s float64, zmap []byte) error {
	minQP := 0
	if !e.cfg.hw && e.codec == "h264" {
		minQP = x264MinQP
	}
	qp, mult := controlToQP(s, minQP)
	t.scales = resize(t.scales, gradcodec.ScaleGroups(shape))
	if bad := quantize(e.pix, t.scales, zmap, src, add, shape, l, RMSMultiple, float32(mult)); bad >= 0 {
		if add == nil {
			if err := gradcodec.CheckFinite(e.codec, src); err != nil {
				return err
			}
		} else {
			// The sums up to group bad are in add; a finite value and
			// residual may overflow to ±Inf.
			g := gradcodec.ScaleGroupRows(shape)
			hi := min((bad+1)*g, shape.Rows) * shape.Cols
			if k := gradcodec.FirstNonFinite(add[:hi]); k >= 0 {
				return fmt.Errorf("%s: %w: value %d plus its error-feedback residual is %v (value %v)", e.codec, gradcodec.ErrNonFinite, k, add[k], src[k])
			}
		}
		return fmt.Errorf("gradcodec: internal: %s quantisation found a non-finite value FirstNonFinite does not", e.codec)
	}
	ctx, err := e.context(l.W, l.FrameH, qp)
	if err != nil {
		return err
	}
	for i := range e.trials {
		if o := &e.trials[i]; o != t {
			o.keep(l) // ctx may hold o's reconstruction
		}
	}
	t.payload, t.qp, t.native = t.payload[:0], qp, ctx.nat != nil
	t.live, t.rec = false, nil
	fsize := l.W * l.FrameH
	for f := 0; f < l.Frames; f++ {
		at := len(t.payload)
		t.payload = append(t.payload, 0, 0, 0, 0)
		pic := e.pix[f*fsize : (f+1)*fsize]
		if ctx.nat != nil {
			var rec []byte
			var stride int
			t.payload, rec, stride, err = ctx.nat.encode(t.payload, pic, qp)
			if err != nil {
				e.forget(ctx)
				ctx.close()
				return fmt.Errorf("gradcodec: %s encoding frame %d of %d: %w", e.codec, f, l.Frames, err)
			}
			if l.Frames == 1 && (l.RowMode || stride == l.W) {
				// Read in place: the refit walks tensor rows at the
				// picture's stride (a flat layout needs packed rows).
				t.rec, t.recStride, t.live = rec, stride, true
			} else {
				t.own = resize(t.own, len(e.pix))
				copyPlane(t.own[f*fsize:], l.W, rec, stride, l.W, l.FrameH)
				t.rec, t.recStride = t.own, l.W
			}
		} else {
			var again bool
			t.payload, again, err = e.encodeFFmpeg(ctx, t.payload, pic, f)
			if err != nil {
				return err
			}
			if again && f+1 < l.Frames {
				if ctx, err = e.context(l.W, l.FrameH, qp); err != nil {
					return err
				}
			}
		}
		binary.LittleEndian.PutUint32(t.payload[at:], uint32(len(t.payload)-at-4))
	}
	return nil
}

// encodeFFmpeg encodes picture number f through the libavcodec context of
// ctx (NVENC), appending its access unit to dst. again reports that ctx had
// to be drained and retired, so the next picture needs a new context.
func (e *videoEncoder) encodeFFmpeg(ctx *encCtx, dst, pic []byte, f int) (_ []byte, again bool, _ error) {
	if e.frame == nil || e.frame.Width() != ctx.w || e.frame.Height() != ctx.h {
		if e.frame != nil {
			e.frame.Free()
		}
		fr := astiav.AllocFrame()
		fr.SetWidth(ctx.w)
		fr.SetHeight(ctx.h)
		fr.SetPixelFormat(astiav.PixelFormatYuv420P)
		if err := fr.AllocBuffer(0); err != nil {
			fr.Free()
			e.frame = nil
			return dst, false, fmt.Errorf("gradcodec: allocating %dx%d frame: %w", ctx.w, ctx.h, err)
		}
		e.frame = fr
	}
	if e.pkt == nil {
		e.pkt = astiav.AllocPacket()
	}
	if err := writeLuma(e.frame, pic, ctx.w, ctx.h); err != nil {
		return dst, false, err
	}
	e.frame.SetPts(ctx.pts)
	e.frame.SetPictureType(astiav.PictureTypeI)
	ctx.pts++
	if err := ctx.cc.SendFrame(e.frame); err != nil {
		e.forget(ctx)
		ctx.close()
		return dst, false, fmt.Errorf("gradcodec: %s encoding frame %d: %w", e.cfg.encName, f, err)
	}
	got := 0
	for {
		err := ctx.cc.ReceivePacket(e.pkt)
		if errors.Is(err, astiav.ErrEagain) {
			break
		}
		if err != nil {
			e.forget(ctx)
			ctx.close()
			return dst, false, fmt.Errorf("gradcodec: %s receiving frame %d: %w", e.cfg.encName, f, err)
		}
		dst = appendWithoutSEI(dst, packetBytes(e.pkt), e.id)
		e.pkt.Unref()
		got++
	}
	if got > 0 {
		return dst, false, nil
	}
	// The encoder held the picture back: drain it and retire the context
	// (a drained context cannot take more frames).
	e.forget(ctx)
	_ = ctx.cc.SendFrame(nil)
	for {
		if err := ctx.cc.ReceivePacket(e.pkt); err != nil {
			break
		}
		dst = appendWithoutSEI(dst, packetBytes(e.pkt), e.id)
		e.pkt.Unref()
		got++
	}
	ctx.close()
	if got == 0 {
		return dst, false, fmt.Errorf("gradcodec: %s produced no packet for frame %d", e.cfg.encName, f)
	}
	return dst, true, nil
}

// resize returns s with length n, reusing its array when it is big enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
