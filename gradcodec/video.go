package gradcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/asticode/go-astiav"
)

// MinVideoValues is the smallest tensor the video encoders put in a video
// frame. Below it the parameter sets and headers alone exceed any sensible
// rate and the codec delivers nothing (biases of 256 values decoded as all
// zeros at 2.6 bits/value with libx264), so h264/hevc Encoders send such
// tensors as int8 frames (about 8–9 bits/value, NMSE ~1e-4), which every
// Decoder reads.
const MinVideoValues = 1024

// Picture layout limits.
const (
	picAlign     = 16      // width and height are multiples of this
	picMinDim    = 32      // smallest width and frame height
	picMaxWidth  = 4096    // tensor rows wider than this are laid out flat
	picMaxHeight = 4096    // frames taller than this are split
	picMaxPixels = 1 << 22 // pixels per frame before a tall tensor is split
	maxQP        = 51
)

// picLayout says where tensor values go in the 8-bit pictures.
type picLayout struct {
	RowMode bool // tensor row r is picture row r; else values are laid out flat
	Stride  int  // distance in the picture buffer between tensor rows
	W       int  // picture width
	H       int  // picture rows holding data
	FrameH  int  // height of each frame
	Frames  int  // number of frames
}

func alignUp(x, a int) int { return (x + a - 1) / a * a }

// planLayout returns the deterministic picture layout of a tensor shape.
// Rows of 32 to 4096 values map to picture rows (the codec sees the
// tensor's own 2-D structure); other shapes are laid out flat in a
// near-square picture. Tall pictures are split into equal frames.
func planLayout(s Shape) picLayout {
	n := s.Len()
	var l picLayout
	if s.Cols >= picMinDim && s.Cols <= picMaxWidth {
		l.RowMode = true
		l.W = alignUp(s.Cols, picAlign)
		l.Stride = l.W
		l.H = s.Rows
	} else {
		w := alignUp(int(math.Ceil(math.Sqrt(float64(n)))), picAlign)
		l.W = min(max(w, picMinDim), 2048)
		l.Stride = s.Cols
		l.H = (n + l.W - 1) / l.W
	}
	h := alignUp(max(l.H, 1), picAlign)
	frames := max((l.W*h+picMaxPixels-1)/picMaxPixels, (h+picMaxHeight-1)/picMaxHeight, 1)
	l.FrameH = max(alignUp((l.H+frames-1)/frames, picAlign), picMinDim)
	l.Frames = (l.H + l.FrameH - 1) / l.FrameH
	return l
}

// fillPicture quantizes src into pix (W × FrameH·Frames) using the scales
// and pads by replicating the last column and row.
func fillPicture(pix []byte, src []float32, s Shape, l picLayout, scales []uint16) {
	g := scaleGroupRows(s)
	for r := 0; r < s.Rows; r++ {
		row := src[r*s.Cols : (r+1)*s.Cols]
		off := r * l.Stride
		out := pix[off : off+s.Cols]
		sc := fromBF16(scales[r/g])
		if sc == 0 || (g > 1 && isZero(row)) {
			for i := range out {
				out[i] = 128
			}
		} else {
			inv := 127 / sc
			for i, v := range row {
				// Round to nearest level in [1, 255] (128 is zero).
				f := min(max(v*inv+128.5, 1), 255.5)
				out[i] = byte(int32(f))
			}
		}
		if l.RowMode {
			last := out[len(out)-1]
			pad := pix[off+s.Cols : off+l.W]
			for i := range pad {
				pad[i] = last
			}
		}
	}
	// Finish the last partial row of a flat layout, then repeat the last
	// row down to the end of the last frame.
	used := l.H * l.W
	if !l.RowMode {
		n := s.Len()
		last := pix[n-1]
		for i := n; i < used; i++ {
			pix[i] = last
		}
	}
	lastRow := pix[used-l.W : used]
	for off := used; off < l.W*l.FrameH*l.Frames; off += l.W {
		copy(pix[off:off+l.W], lastRow)
	}
}

// readPicture dequantizes pix into dst.
func readPicture(dst []float32, pix []byte, s Shape, l picLayout, scales []float32) {
	g := scaleGroupRows(s)
	for r := 0; r < s.Rows; r++ {
		row := dst[r*s.Cols : (r+1)*s.Cols]
		sc := scales[r/g]
		if sc == 0 {
			clear(row)
			continue
		}
		m := sc / 127
		in := pix[r*l.Stride : r*l.Stride+s.Cols]
		for i, p := range in {
			row[i] = float32(int32(p)-128) * m
		}
	}
}

var ffmpegLogOnce sync.Once

// quietFFmpeg silences FFmpeg's logging unless VCCL_FFMPEG_LOG names a
// level (quiet, error, warning, info, verbose, debug).
func quietFFmpeg() {
	ffmpegLogOnce.Do(func() {
		lvl := astiav.LogLevelQuiet
		switch strings.ToLower(os.Getenv("VCCL_FFMPEG_LOG")) {
		case "error":
			lvl = astiav.LogLevelError
		case "warning":
			lvl = astiav.LogLevelWarning
		case "info":
			lvl = astiav.LogLevelInfo
		case "verbose":
			lvl = astiav.LogLevelVerbose
		case "debug":
			lvl = astiav.LogLevelDebug
		}
		astiav.SetLogLevel(lvl)
	})
}

// Encoder names per codec.
var (
	swEncoders = map[string]string{"h264": "libx264", "hevc": "libx265"}
	hwEncoders = map[string]string{"h264": "h264_nvenc", "hevc": "hevc_nvenc"}
	swDecoders = map[string]string{"h264": "h264", "hevc": "hevc"}
	hwDecoders = map[string]string{"h264": "h264_cuvid", "hevc": "hevc_cuvid"}
)

// DefaultPreset returns the preset used when Options.Preset is empty.
func DefaultPreset(codec, backend string) string {
	if backend == "nvenc" {
		return "p1"
	}
	return "ultrafast"
}

// encoderConfig is what openEncoder needs.
type encoderConfig struct {
	encName string
	hw      bool
	preset  string
	w, h    int
	qp      int
}

// openEncoder opens an intra-only constant-QP encoder context.
func openEncoder(c encoderConfig) (*astiav.CodecContext, error) {
	quietFFmpeg()
	codec := astiav.FindEncoderByName(c.encName)
	if codec == nil {
		return nil, fmt.Errorf("gradcodec: %w: encoder %s is not in this FFmpeg build", ErrBackendUnavailable, c.encName)
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, fmt.Errorf("gradcodec: allocating %s context failed", c.encName)
	}
	cc.SetWidth(c.w)
	cc.SetHeight(c.h)
	cc.SetTimeBase(astiav.NewRational(1, 25))
	cc.SetFramerate(astiav.NewRational(25, 1))
	cc.SetGopSize(1)
	cc.SetThreadCount(1)
	d := astiav.NewDictionary()
	defer d.Free()
	qp := strconv.Itoa(c.qp)
	set := func(k, v string) { _ = d.Set(k, v, 0) }
	switch {
	case c.hw:
		cc.SetPixelFormat(astiav.PixelFormatYuv420P)
		set("preset", c.preset)
		set("tune", "ull")
		set("rc", "constqp")
		set("qp", qp)
		set("zerolatency", "1")
		set("delay", "0")
		set("forced-idr", "1")
	case c.encName == "libx264":
		cc.SetPixelFormat(astiav.PixelFormatGray8)
		set("preset", c.preset)
		set("tune", "zerolatency")
		set("qp", qp)
		set("x264-params", "keyint=1:min-keyint=1:scenecut=0:bframes=0:rc-lookahead=0:sync-lookahead=0:threads=1:sliced-threads=0:aq-mode=0:psy=0")
	case c.encName == "libx265":
		cc.SetPixelFormat(astiav.PixelFormatGray8)
		set("preset", c.preset)
		set("x265-params", "keyint=1:min-keyint=1:bframes=0:rc-lookahead=0:frame-threads=1:pools=none:log-level=none:repeat-headers=1:info=0:aq-mode=0:psy-rd=0:psy-rdoq=0:qp="+qp)
	}
	if err := cc.Open(codec, d); err != nil {
		cc.Free()
		return nil, fmt.Errorf("gradcodec: opening %s %dx%d preset %s qp %d: %w", c.encName, c.w, c.h, c.preset, c.qp, err)
	}
	return cc, nil
}

var (
	probeMu    sync.Mutex
	probeCache = map[string]bool{}
)

var (
	presetMu    sync.Mutex
	presetCache = map[string]error{}
)

// probeEncoder opens (once per process for each encoder and preset) a
// 256×256 context with c's encoder and preset, so that a bad preset fails in
// NewEncoder rather than mid-training.
func probeEncoder(c encoderConfig) error {
	key := c.encName + "\x00" + c.preset
	presetMu.Lock()
	defer presetMu.Unlock()
	if err, done := presetCache[key]; done {
		return err
	}
	c.w, c.h, c.qp = 256, 256, 30
	cc, err := openEncoder(c)
	if err == nil {
		cc.Free()
	}
	presetCache[key] = err
	return err
}

// hwEncoderAvailable reports whether the NVENC encoder of codec opens here.
func hwEncoderAvailable(codec string) bool {
	name := hwEncoders[codec]
	probeMu.Lock()
	defer probeMu.Unlock()
	if ok, done := probeCache[name]; done {
		return ok
	}
	cc, err := openEncoder(encoderConfig{encName: name, hw: true, preset: "p1", w: 256, h: 256, qp: 30})
	if err == nil {
		cc.Free()
	}
	probeCache[name] = err == nil
	return err == nil
}

// hwDecoderAvailable reports whether the cuvid decoder of codec opens here.
func hwDecoderAvailable(codec string) bool {
	name := hwDecoders[codec]
	probeMu.Lock()
	defer probeMu.Unlock()
	if ok, done := probeCache[name]; done {
		return ok
	}
	cc, err := openDecoder(name)
	if err == nil {
		cc.Free()
	}
	probeCache[name] = err == nil
	return err == nil
}

func openDecoder(name string) (*astiav.CodecContext, error) {
	quietFFmpeg()
	codec := astiav.FindDecoderByName(name)
	if codec == nil {
		return nil, fmt.Errorf("gradcodec: %w: decoder %s is not in this FFmpeg build", ErrBackendUnavailable, name)
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, fmt.Errorf("gradcodec: allocating %s context failed", name)
	}
	cc.SetThreadCount(1)
	cc.SetFlags(cc.Flags().Add(astiav.CodecContextFlagLowDelay))
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("gradcodec: opening decoder %s: %w", name, err)
	}
	return cc, nil
}

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
	auto   bool           // backend "auto": NVENC may fall back to software
	small  *simpleEncoder // int8 frames for tensors under MinVideoValues
	preset string         // Options.Preset as given
	cfg    encoderConfig
	target float64

	ctxs    []*encCtx // most recently used first
	frame   *astiav.Frame
	pkt     *astiav.Packet
	pix     []byte
	scales  []uint16
	bufs    [2][]byte
	rcs     map[Shape]*rateControl // per tensor shape
	dec     *videoDecoder          // decodes own frames for the scale refit
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

var _ Encoder = (*videoEncoder)(nil)

func newVideoEncoder(opts Options) (*videoEncoder, error) {
	quietFFmpeg()
	if err := packetLayoutOK(); err != nil {
		return nil, err
	}
	e := &videoEncoder{codec: opts.Codec, id: codecIDs[opts.Codec], target: opts.BitsPerValue}
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
				opts.Codec, ErrBackendUnavailable, hwEncoders[opts.Codec], swEncoders[opts.Codec])
		}
		e.cfg.hw = true
	case "software":
		if astiav.FindEncoderByName(swEncoders[opts.Codec]) == nil {
			return nil, fmt.Errorf("gradcodec: %s backend software: %w: %s is not in this FFmpeg build", opts.Codec, ErrBackendUnavailable, swEncoders[opts.Codec])
		}
	default:
		return nil, fmt.Errorf("gradcodec: %w: backend %q, want auto, nvenc or software", ErrBackendUnavailable, backend)
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
	e.rcs = map[Shape]*rateControl{}
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
		e.dec.close()
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
func (e *videoEncoder) Encode(dst []byte, src []float32, shape Shape) ([]byte, error) {
	return e.EncodeRecon(dst, src, shape, nil)
}

// EncodeRecon is Encode that also writes into recon what every Decoder
// yields for the frame (recon may be nil).
func (e *videoEncoder) EncodeRecon(dst []byte, src []float32, shape Shape, recon []float32) ([]byte, error) {
	if recon != nil && len(recon) != len(src) {
		return dst, fmt.Errorf("%s: %w: recon has %d values, src %d", e.codec, ErrShapeMismatch, len(recon), len(src))
	}
	if e.closed {
		return dst, fmt.Errorf("gradcodec: %s encoder is closed", e.codec)
	}
	if err := checkShape(e.codec, src, shape); err != nil {
		return dst, err
	}
	if err := checkFinite(e.codec, src); err != nil {
		return dst, err
	}
	n := shape.Len()
	if n == 0 {
		var w frameWriter
		w.begin(dst, e.id, shape, 0, 0, 0, 0)
		return w.finish(0), nil
	}
	if n < MinVideoValues {
		// Too small for a video frame to carry anything: send int8.
		if e.small == nil {
			e.small = &simpleEncoder{id: idInt8}
		}
		return e.small.EncodeRecon(dst, src, shape, recon)
	}
	l := planLayout(shape)
	if err := e.resize(l.W, l.FrameH); err != nil {
		return dst, err
	}
	e.pix = resize(e.pix, l.W*l.FrameH*l.Frames)
	e.scales = resize(e.scales, scaleCount(e.id, shape))
	overhead := HeaderSize + TrailerSize + 2*len(e.scales) + zeroMapBytes(e.id, shape) + 4*l.Frames
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
func (e *videoEncoder) refit(frame []byte, src []float32, shape Shape, l picLayout, recon []float32) error {
	h, err := ParseHeader(frame)
	if err != nil {
		return fmt.Errorf("gradcodec: internal: own frame: %w", err)
	}
	zoff := HeaderSize + 2*h.Scales
	zmap := frame[zoff : zoff+h.ZeroMap]
	if err := e.dec.pixels(h, l, frame[zoff+h.ZeroMap:h.Size-TrailerSize]); err != nil {
		return fmt.Errorf("gradcodec: %s: decoding own frame: %w", e.codec, err)
	}
	pix := e.dec.pix
	g := scaleGroupRows(shape)
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
		old := binary.LittleEndian.Uint16(frame[HeaderSize+2*i:])
		var sc uint16
		switch {
		case old == 0 || qq == 0:
			sc = old // nothing to fit: the group decodes as zeros either way
		case dot > 0:
			sc = toBF16(float32(127 * dot / qq))
			if v := fromBF16(sc); math.IsInf(float64(v), 0) || v == 0 {
				sc = old
			}
		}
		binary.LittleEndian.PutUint16(frame[HeaderSize+2*i:], sc)
		e.fscales[i] = fromBF16(sc)
	}
	fixChecksumAt(frame, h.Size)
	if recon != nil {
		readPicture(recon, pix, shape, l, e.fscales)
		applyZeroMap(recon, shape, zmap)
	}
	return nil
}

// controlToQP splits the continuous rate control value s into an integer QP
// and a multiplier of the scales: the effective quantizer step relative to
// the values grows as 2^(s/6), like the codec's step per QP, so rate and
// error are smooth in s between integer QPs.
func controlToQP(s float64) (int, float64) {
	qp := int(math.Floor(s))
	qp = min(max(qp, 0), maxQP)
	return qp, math.Exp2((s - float64(qp)) / 6)
}

// encodeAt encodes src with control value s, appending the frame to dst.
func (e *videoEncoder) encodeAt(dst []byte, src []float32, shape Shape, l picLayout, s float64) ([]byte, error) {
	qp, mult := controlToQP(s)
	computeScales(e.scales, src, shape, VideoRMSMultiple, mult)
	fillPicture(e.pix, src, shape, l, e.scales)
	ctx, err := e.context(qp)
	if err != nil {
		return dst, err
	}
	var w frameWriter
	w.begin(dst, e.id, shape, l.W, l.FrameH, l.Frames, qp)
	w.buf = putScales(w.buf, e.scales)
	w.buf = appendZeroMap(w.buf, src, shape, e.id)
	fsize := l.W * l.FrameH
	for f := 0; f < l.Frames; f++ {
		if err := writeLuma(e.frame, e.pix[f*fsize:(f+1)*fsize], l.W, l.FrameH); err != nil {
			return dst, err
		}
		e.frame.SetPts(ctx.pts)
		e.frame.SetPictureType(astiav.PictureTypeI)
		ctx.pts++
		lenAt := len(w.buf)
		w.buf = append(w.buf, 0, 0, 0, 0)
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
			w.buf = appendWithoutSEI(w.buf, packetBytes(e.pkt), e.id)
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
				w.buf = appendWithoutSEI(w.buf, packetBytes(e.pkt), e.id)
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
		binary.LittleEndian.PutUint32(w.buf[lenAt:], uint32(len(w.buf)-lenAt-4))
	}
	return w.finish(2*len(e.scales) + zeroMapBytes(e.id, shape)), nil
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

// appendWithoutSEI appends the Annex-B access unit au to dst, leaving out
// SEI NAL units (encoder banners and hints a decoder does not need).
func appendWithoutSEI(dst, au []byte, id uint8) []byte {
	start := []byte{0, 0, 1}
	i := bytes.Index(au, start)
	if i < 0 {
		return append(dst, au...)
	}
	for i >= 0 {
		j := bytes.Index(au[i+3:], start)
		end := len(au)
		if j >= 0 {
			end = i + 3 + j
			if end > 0 && au[end-1] == 0 { // 4-byte start code of the next NAL
				end--
			}
		}
		nal := au[i:end]
		sei := false
		if len(nal) > 3 {
			hdr := nal[3]
			if id == idH264 {
				sei = hdr&0x1f == 6
			} else {
				t := (hdr >> 1) & 0x3f
				sei = t == 39 || t == 40
			}
		}
		if !sei {
			dst = append(dst, 0)
			dst = append(dst, nal...)
		}
		if j < 0 {
			break
		}
		i = i + 3 + j
	}
	return dst
}

// rateControl tracks one stream's control value s (a continuous QP, see
// controlToQP) and how the payload rate responds to it.
type rateControl struct {
	s       float64
	slope   float64 // decrease of log2(payload bits per value) per unit of s
	started bool
	hasPrev bool
	prevS   float64
	prevR   float64
}

// Measured starting points (see doc.go): the control value that gives about
// 1.4 bits per value on gradient-like tensors, and the slope near it.
func newRateControl(codec string, target float64) *rateControl {
	s0, slope := 38.0, 0.2
	if codec == "hevc" {
		s0 = 37
	}
	// Move the start by the default slope for targets other than 1.4.
	s0 -= math.Log2(target/1.4) / slope
	return &rateControl{s: s0, slope: slope}
}

// observe records that control value s gave payload rate r and refines the
// slope from the previous observation, giving the new estimate weight w.
func (rc *rateControl) observe(s, r, w float64) {
	if r <= 0 {
		return
	}
	if rc.hasPrev && math.Abs(s-rc.prevS) > 0.3 && rc.prevR > 0 {
		est := (math.Log2(rc.prevR) - math.Log2(r)) / (s - rc.prevS)
		est = min(max(est, 0.05), 0.4)
		rc.slope = (1-w)*rc.slope + w*est
	}
	rc.hasPrev, rc.prevS, rc.prevR = true, s, r
}

// next returns the control value expected to reach payload rate tp from
// the observation (s, r).
func (rc *rateControl) next(s, r, tp float64) float64 {
	if r <= 0 {
		r = tp / 4
	}
	step := math.Log2(r/tp) / rc.slope
	step = min(max(step, -12), 12)
	return min(max(s+step, -18), maxQP+24)
}
