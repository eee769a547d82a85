package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
)

// DefaultRawBelow is GradCodec's default RawBelow: pieces of fewer values
// are sent as raw float32 (a video frame's header and padding would cost
// more than it saves).
const DefaultRawBelow = 4096

// DefaultMaxEncoders is GradCodec's default MaxEncoders. A rank encodes
// about Size stream families per bucket each step (Size-1 reduce-scatter
// chunks and its own allgather chunk), each with its pieces, so the cap
// must hold a step's worth or encoders (and their rate control) are closed
// and reopened every step; an x264 encoder holds about 2 MiB.
const DefaultMaxEncoders = 64

// minInt8Piece is the fewest values of a small piece (under RawBelow) that
// goes as an int8 frame rather than raw; below it the frame's 32 bytes of
// header and checksum weigh too much.
const minInt8Piece = 64

// fixedRateCodecs are the codecs whose own frames already carry 8 bits per
// value or more: their small pieces go raw.
var fixedRateCodecs = map[string]bool{"raw": true, "fp16": true, "bf16": true, "int8": true}

// minSide is the smallest side of a piece that is encoded with its own 2-D
// shape; thinner pieces are re-laid out near-square first.
const minSide = 16

// GradCodec is a Codec over package gradcodec. Each chunk goes on the wire as
// a container of pieces, each a gradcodec frame or raw float32 values, with a
// CRC-32 trailer. It keeps one gradcodec.Encoder per stream family (a
// stream less its sub-chunk: "bucket/rs/c2", see streamFamily), piece and
// shape, shared by the sub-chunks of the stream, each of which keeps its own
// rate control state (gradcodec.StreamEncoder), so rate control follows a
// slot step after step while a large allreduce opens a few encoders, not
// one per sub-chunk; at most MaxEncoders of them, the least recently used
// closed first. It also keeps one Decoder for Decode and a second one inside
// Encode for encoders without their own reconstruction, and, when enabled,
// an error-feedback residual per stream.
//
// Policy: a piece with fewer than RawBelow values is too small for the
// codec's frame (with the default 4096 that covers biases and norms, and
// the pieces a ring chunk's boundary cuts off a large tensor). It goes raw,
// or, when the codec is a rate-controlled one (not raw, fp16, bf16 or int8)
// and the piece holds at least minInt8Piece values, as an int8 frame: 8–9
// bits/value instead of 32, NMSE about 1e-4, its error fed back like any
// frame's. Any other piece with a side under 16 (a partial row, a large 1-D
// tensor or unshaped buffer, a thin matrix) is re-laid out near-square,
// with the few values that do not fill the last row sent as a small piece;
// the rest keep their 2-D shape.
//
// Encode and Decode may run at the same time (the ring calls each from one
// goroutine); neither may run concurrently with itself.
type GradCodec struct {
	// RawBelow: pieces with fewer values are sent raw. Defaults to
	// DefaultRawBelow (set by NewGradCodec).
	RawBelow int
	// MaxEncoders bounds the open encoders (one per stream family, piece
	// and shape); the least recently used is closed when another is needed. Defaults to
	// DefaultMaxEncoders (set by NewGradCodec); values below 1 mean 1.
	MaxEncoders int

	opts gradcodec.Options
	ef   *gradcodec.ErrorFeedback // nil when error feedback is off

	encMu    sync.Mutex     // guards the encode side and closed
	encoders []shapeEncoder // most recently used first
	encDec   *gradcodec.Decoder
	small    gradcodec.Encoder // int8, for small pieces; opened on first use
	x        []float32
	rec      []float32 // reconstruction scratch when Encode gets no recon
	frame    []byte
	closed   bool

	decMu sync.Mutex // guards the decode side
	dec   *gradcodec.Decoder
}

var _ Codec = (*GradCodec)(nil)

// encKey names an encoder: the stream family, the piece and its shape.
type encKey struct {
	family string
	piece  int
	shape  gradcodec.Shape
}

// shapeEncoder is an open encoder and its key.
type shapeEncoder struct {
	key encKey
	enc gradcodec.Encoder
}

// streamFamily returns stream without its sub-chunk suffix
// (".s<sub>@<off>+<n>", see allReduce.streamName), so the sub-chunks of a
// chunk share an encoder; other names are their own family.
func streamFamily(stream string) string {
	i := strings.LastIndex(stream, ".s")
	if i < 0 || !strings.Contains(stream[i:], "@") {
		return stream
	}
	return stream[:i]
}

// encoderFor returns the encoder for key, opening one (and closing the
// least recently used beyond MaxEncoders) when there is none. Callers hold
// encMu.
func (c *GradCodec) encoderFor(key encKey) (gradcodec.Encoder, error) {
	for i, se := range c.encoders {
		if se.key == key {
			copy(c.encoders[1:i+1], c.encoders[:i])
			c.encoders[0] = se
			return se.enc, nil
		}
	}
	enc, err := gradcodec.NewEncoder(c.opts)
	if err != nil {
		return nil, err
	}
	for len(c.encoders) >= max(c.MaxEncoders, 1) {
		last := c.encoders[len(c.encoders)-1]
		c.encoders = c.encoders[:len(c.encoders)-1]
		if err := last.enc.Close(); err != nil {
			_ = enc.Close()
			return nil, fmt.Errorf("closing the %dx%d encoder of %s: %w", last.key.shape.Rows, last.key.shape.Cols, last.key.family, err)
		}
	}
	c.encoders = append(c.encoders, shapeEncoder{})
	copy(c.encoders[1:], c.encoders)
	c.encoders[0] = shapeEncoder{key: key, enc: enc}
	return enc, nil
}

// OpenEncoders returns how many encoders are open (at most MaxEncoders).
func (c *GradCodec) OpenEncoders() int {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	return len(c.encoders)
}

// NewGradCodec returns a GradCodec for opts (see gradcodec.Options) with error
// feedback per stream when errorFeedback is set. It fails, wrapping
// gradcodec.ErrUnknownCodec or gradcodec.ErrBackendUnavailable, when the codec
// cannot be opened here.
func NewGradCodec(opts gradcodec.Options, errorFeedback bool) (*GradCodec, error) {
	probe, err := gradcodec.NewEncoder(opts)
	if err != nil {
		return nil, fmt.Errorf("ring: grad codec: %w", err)
	}
	_ = probe.Close()
	encDec, err := gradcodec.NewDecoder(opts.Backend)
	if err != nil {
		return nil, fmt.Errorf("ring: grad codec: %w", err)
	}
	dec, err := gradcodec.NewDecoder(opts.Backend)
	if err != nil {
		_ = encDec.Close()
		return nil, fmt.Errorf("ring: grad codec: %w", err)
	}
	c := &GradCodec{RawBelow: DefaultRawBelow, MaxEncoders: DefaultMaxEncoders, opts: opts, encDec: encDec, dec: dec}
	if errorFeedback {
		c.ef = gradcodec.NewErrorFeedback()
	}
	return c, nil
}

// Name returns the gradcodec codec name, e.g. "hevc".
func (c *GradCodec) Name() string { return c.opts.Codec }

// ErrorFeedback returns the residual store, or nil when error feedback is
// off (for inspection and Reset).
func (c *GradCodec) ErrorFeedback() *gradcodec.ErrorFeedback { return c.ef }

// Close frees every encoder and decoder. It is idempotent; Encode and Decode
// fail after it.
func (c *GradCodec) Close() error {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	c.decMu.Lock()
	defer c.decMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, se := range c.encoders {
		errs = append(errs, se.enc.Close())
	}
	c.encoders = nil
	if c.small != nil {
		errs = append(errs, c.small.Close())
	}
	errs = append(errs, c.encDec.Close(), c.dec.Close())
	return errors.Join(errs...)
}

var errCodecClosed = errors.New("ring: grad codec is closed")

// Container format: 'V', version 1, uvarint piece count, then per piece a
// kind byte, uvarint value count, uvarint byte length and the bytes; a
// CRC-32 (IEEE) of all of it trails.
const (
	containerMagic   = 'V'
	containerVersion = 1
	pieceRaw         = 0
	pieceFrame       = 1
)

// wirePiece is one piece as sent: raw values, an int8 frame of shape
// (small), or a frame of the codec of shape.
type wirePiece struct {
	raw   bool
	small bool
	n     int
	shape gradcodec.Shape
}

// wirePieces applies the policy to the ring's pieces.
func (c *GradCodec) wirePieces(pieces []gradcodec.Shape) []wirePiece {
	var out []wirePiece
	smallPiece := func(s gradcodec.Shape) wirePiece {
		n := s.Len()
		if n >= minInt8Piece && !fixedRateCodecs[c.opts.Codec] {
			return wirePiece{small: true, n: n, shape: s}
		}
		return wirePiece{raw: true, n: n}
	}
	for _, p := range pieces {
		n := p.Len()
		switch {
		case n == 0:
		case n < c.RawBelow:
			out = append(out, smallPiece(p))
		case p.Rows < minSide || p.Cols < minSide:
			s, tail := gradcodec.NearSquare(n)
			if s.Len() > 0 {
				out = append(out, wirePiece{n: s.Len(), shape: s})
			}
			if tail > 0 {
				out = append(out, smallPiece(gradcodec.Shape{Rows: 1, Cols: tail}))
			}
		default:
			out = append(out, wirePiece{n: n, shape: p})
		}
	}
	return out
}

// Encode implements Codec.
func (c *GradCodec) Encode(stream string, src []float32, pieces []gradcodec.Shape, recon []float32) ([]byte, error) {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	if c.closed {
		return nil, errCodecClosed
	}
	sum := 0
	for _, p := range pieces {
		if p.Rows < 0 || p.Cols < 0 {
			return nil, fmt.Errorf("ring: grad codec: stream %s: negative piece %dx%d: %w", stream, p.Rows, p.Cols, gradcodec.ErrShapeMismatch)
		}
		sum += p.Len()
	}
	if sum != len(src) || (recon != nil && len(recon) != len(src)) {
		return nil, fmt.Errorf("ring: grad codec: stream %s: pieces cover %d values, src has %d, recon %d: %w",
			stream, sum, len(src), len(recon), gradcodec.ErrShapeMismatch)
	}
	if cap(c.x) < len(src) {
		c.x = make([]float32, len(src))
	}
	x := c.x[:len(src)]
	// Error feedback without passes of its own: encoders that add the
	// residual themselves (gradcodec.FeedbackEncoder) get src and the
	// residual; for the other pieces it is added in the copy (input), and
	// their encoders write the new one beside recon.
	var res []float32
	kept := false
	if c.ef != nil {
		res, kept = c.ef.Carry(stream, len(src))
	}
	input := func(off, n int) []float32 { // the piece of src plus residual
		seg := x[off : off+n]
		if kept {
			kern.AddTo2(seg, src[off:off+n], res[off:off+n])
		} else {
			copy(seg, src[off:off+n])
		}
		return seg
	}
	fail := func(err error) ([]byte, error) {
		if c.ef != nil {
			c.ef.Reset(stream) // partly overwritten
		}
		return nil, err
	}
	// With recon nil (a reduce-scatter hop) the feedback encoders write
	// the new residual alone; the others write their reconstruction into
	// scratch.
	recAt := func(off, n int) []float32 {
		if recon != nil {
			return recon[off : off+n]
		}
		if cap(c.rec) < len(src) {
			c.rec = make([]float32, len(src))
		}
		return c.rec[off : off+n]
	}
	wp := c.wirePieces(pieces)
	family := streamFamily(stream)
	out := []byte{containerMagic, containerVersion}
	out = binary.AppendUvarint(out, uint64(len(wp)))
	off := 0
	for i, p := range wp {
		if p.raw {
			seg := input(off, p.n)
			if k := gradcodec.FirstNonFinite(seg); k >= 0 {
				return fail(fmt.Errorf("ring: grad codec: stream %s: value %d is %v: %w", stream, off+k, seg[k], gradcodec.ErrNonFinite))
			}
			out = append(out, pieceRaw)
			out = binary.AppendUvarint(out, uint64(p.n))
			out = binary.AppendUvarint(out, uint64(4*p.n))
			out = gradcodec.AppendFloat32s(out, seg)
			if recon != nil {
				copy(recon[off:off+p.n], seg)
			}
			if res != nil {
				clear(res[off : off+p.n])
			}
		} else {
			var enc gradcodec.Encoder
			var err error
			if p.small {
				if c.small == nil {
					if c.small, err = gradcodec.NewEncoder(gradcodec.Options{Codec: "int8"}); err != nil {
						return fail(fmt.Errorf("ring: grad codec: stream %s: small pieces: %w", stream, err))
					}
				}
				enc = c.small
			} else if enc, err = c.encoderFor(encKey{family: family, piece: i, shape: p.shape}); err != nil {
				return fail(fmt.Errorf("ring: grad codec: stream %s: %w", stream, err))
			} else if se, ok := enc.(gradcodec.StreamEncoder); ok {
				se.SetStream(stream) // each sub-chunk keeps its own rate control
			}
			// EncodeRecon yields exactly what a decoder of the frame
			// produces, without decoding the frame a second time;
			// EncodeResidual also the residual, in the same pass, and
			// EncodeFeedback adds the old one itself, with no copy.
			var frame []byte
			fe, feedback := enc.(gradcodec.FeedbackEncoder)
			if feedback && res != nil {
				var rec []float32
				if recon != nil {
					rec = recon[off : off+p.n]
				}
				frame, err = fe.EncodeFeedback(c.frame[:0], src[off:off+p.n], p.shape, rec, res[off:off+p.n])
			} else if re, ok := enc.(gradcodec.ResidualEncoder); ok && res != nil {
				frame, err = re.EncodeResidual(c.frame[:0], input(off, p.n), p.shape, recAt(off, p.n), res[off:off+p.n])
			} else {
				seg, rec := input(off, p.n), recAt(off, p.n)
				frame, err = gradcodec.EncodeRecon(enc, c.encDec, c.frame[:0], seg, p.shape, rec)
				if err == nil && res != nil {
					for k, v := range seg {
						res[off+k] = v - rec[k]
					}
				}
			}
			if err != nil {
				return fail(fmt.Errorf("ring: grad codec: stream %s piece %d (%dx%d): %w", stream, i, p.shape.Rows, p.shape.Cols, err))
			}
			c.frame = frame
			out = append(out, pieceFrame)
			out = binary.AppendUvarint(out, uint64(p.n))
			out = binary.AppendUvarint(out, uint64(len(frame)))
			out = append(out, frame...)
		}
		off += p.n
	}
	return binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(out)), nil
}

// Decode implements Codec.
func (c *GradCodec) Decode(dst []float32, wire []byte) error {
	c.decMu.Lock()
	defer c.decMu.Unlock()
	if c.closed {
		return errCodecClosed
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("ring: grad codec: container: %s: %w", fmt.Sprintf(format, a...), gradcodec.ErrBadFrame)
	}
	if len(wire) < 7 {
		return bad("%d bytes is too short", len(wire))
	}
	body := wire[:len(wire)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(wire[len(wire)-4:]) {
		return bad("checksum mismatch")
	}
	if body[0] != containerMagic || body[1] != containerVersion {
		return bad("magic/version %#x %d", body[0], body[1])
	}
	p := body[2:]
	count, k := binary.Uvarint(p)
	if k <= 0 || count > uint64(len(p)) {
		return bad("piece count")
	}
	p = p[k:]
	off := 0
	for i := uint64(0); i < count; i++ {
		if len(p) < 1 {
			return bad("piece %d truncated", i)
		}
		kind := p[0]
		p = p[1:]
		n, k1 := binary.Uvarint(p)
		if k1 <= 0 {
			return bad("piece %d value count", i)
		}
		p = p[k1:]
		size, k2 := binary.Uvarint(p)
		if k2 <= 0 || size > uint64(len(p)-k2) {
			return bad("piece %d length", i)
		}
		p = p[k2:]
		b := p[:size]
		p = p[size:]
		if n > uint64(len(dst)-off) {
			return fmt.Errorf("ring: grad codec: container holds more than %d values: %w", len(dst), gradcodec.ErrShapeMismatch)
		}
		seg := dst[off : off+int(n)]
		switch kind {
		case pieceRaw:
			if size != 4*n {
				return bad("raw piece %d of %d bytes for %d values", i, size, n)
			}
			gradcodec.Float32sFromBytes(seg, b)
		case pieceFrame:
			if err := c.dec.Decode(seg, b); err != nil {
				return fmt.Errorf("ring: grad codec: piece %d: %w", i, err)
			}
		default:
			return bad("piece %d kind %d", i, kind)
		}
		off += int(n)
	}
	if len(p) != 0 {
		return bad("%d trailing bytes", len(p))
	}
	if off != len(dst) {
		return fmt.Errorf("ring: grad codec: container holds %d values, want %d: %w", off, len(dst), gradcodec.ErrShapeMismatch)
	}
	return nil
}

// RawWire implements RawWireCodec: with the "raw" codec the ring moves the
// float32 values itself (the container, the per-value encoding and the
// second checksum are skipped; error feedback has nothing to keep).
func (c *GradCodec) RawWire() bool { return c.opts.Codec == "raw" }

// wireBound is an optional Codec interface: maxWire bounds the wire size
// of a chunk of n values, so the ring can refuse larger frames before they
// are read.
type wireBound interface {
	maxWire(n int) int
}

// maxWire implements wireBound: a container of n values is at most 16
// bytes per value (video frames of thin pieces are padded to the codec's
// alignment; raw pieces take 4) plus 64 KiB of headers, scales and
// parameter sets.
func (c *GradCodec) maxWire(n int) int { return 16*n + 64<<10 }
