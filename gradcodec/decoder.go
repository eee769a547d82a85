package gradcodec

import (
	"fmt"
	"strings"
)

// Decoder decodes frames of any registered codec (it reads the codec id
// from the frame header), keeping each codec's payload decoder (for video,
// its decoder contexts) open between calls. It is not safe for concurrent
// use; keep one per goroutine.
type Decoder struct {
	backend string
	scales  []float32
	codecs  map[uint8]PayloadDecoder
	closed  bool
}

// NewDecoder returns a Decoder. backend is "auto" (hardware decoders, such
// as NVDEC through the cuvid decoders, when they open, else software),
// "nvenc" (hardware only; an error wrapping ErrBackendUnavailable when no
// registered codec has a hardware decoder here) or "software"; "" means
// "auto".
func NewDecoder(backend string) (*Decoder, error) {
	switch backend {
	case "":
		backend = "auto"
	case "auto", "software":
	case "nvenc":
		if !hardwareDecoderAvailable() {
			return nil, fmt.Errorf("gradcodec: decoder backend nvenc: %w: no registered codec has a hardware decoder that opens on this machine (registered: %s); available: software",
				ErrBackendUnavailable, strings.Join(Codecs(), ", "))
		}
	default:
		return nil, fmt.Errorf("gradcodec: %w: backend %q, want auto, nvenc or software", ErrBackendUnavailable, backend)
	}
	return &Decoder{backend: backend, codecs: map[uint8]PayloadDecoder{}}, nil
}

// hardwareDecoderAvailable reports whether some registered codec has a
// hardware decoder that opens here.
func hardwareDecoderAvailable() bool {
	registry.RLock()
	cs := make([]*Codec, 0, len(registry.byID))
	for _, c := range registry.byID {
		cs = append(cs, c)
	}
	registry.RUnlock()
	for _, c := range cs {
		if c.HardwareDecoder != nil && c.HardwareDecoder() {
			return true
		}
	}
	return false
}

// Decode decodes one frame into dst. len(dst) must equal the frame's shape
// (else an error wrapping ErrShapeMismatch); a truncated, corrupted or
// foreign frame gives an error wrapping ErrBadFrame. dst is written only
// when the error is nil or wraps ErrBadFrame from the payload.
func (d *Decoder) Decode(dst []float32, frame []byte) error {
	if d.closed {
		return fmt.Errorf("gradcodec: decoder is closed")
	}
	h, err := verifyFrame(frame)
	if err != nil {
		return err
	}
	if len(dst) != h.Shape.Len() {
		return fmt.Errorf("%w: frame holds %dx%d = %d values, destination has %d", ErrShapeMismatch, h.Shape.Rows, h.Shape.Cols, h.Shape.Len(), len(dst))
	}
	d.scales = resize(d.scales, h.Scales)
	if err := readScales(d.scales, frame[HeaderSize:]); err != nil {
		return err
	}
	zmap := frame[HeaderSize+2*h.Scales : HeaderSize+2*h.Scales+h.ZeroMap]
	if pad := h.Shape.Rows % 8; pad != 0 && len(zmap) > 0 && zmap[len(zmap)-1]>>pad != 0 {
		return fmt.Errorf("%w: zero-row bitmap marks rows beyond %d", ErrBadFrame, h.Shape.Rows)
	}
	body := frame[HeaderSize+2*h.Scales+h.ZeroMap : h.Size-TrailerSize]
	id := frame[5]
	pd := d.codecs[id]
	if pd == nil {
		c, ok := lookupID(id)
		if !ok { // verifyFrame found it registered
			return fmt.Errorf("%w: codec id %d is not registered", ErrBadFrame, id)
		}
		if pd, err = c.NewPayloadDecoder(d.backend); err != nil {
			return fmt.Errorf("gradcodec: %s decoder: %w", c.Name, err)
		}
		d.codecs[id] = pd
	}
	if err := pd.DecodePayload(dst, h, body, d.scales); err != nil {
		return err
	}
	ApplyZeroMap(dst, h.Shape, zmap)
	return nil
}

// Close frees the decoder contexts. It is idempotent.
func (d *Decoder) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var first error
	for _, pd := range d.codecs {
		if err := pd.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.codecs = nil
	return first
}

// DecodeFrameMaxValues bounds the tensor DecodeFrame allocates: frames of
// more values than this, and than DecodeFrameMaxRatio per frame byte, are
// refused. A frame's header sizes the tensor, and entropy-coded codecs
// compress a zero tensor of any size into a few bytes, so without a bound a
// 40-byte hostile frame could ask for gigabytes.
const (
	DecodeFrameMaxValues = 1 << 26
	DecodeFrameMaxRatio  = 1024
)

// DecodeFrame is a convenience that decodes frame with a throw-away
// software Decoder and returns the values and the header. It refuses (with
// ErrBadFrame) a frame of more than DecodeFrameMaxValues values that also
// holds more than DecodeFrameMaxRatio values per byte; frames from
// untrusted peers belong in Decoder.Decode with a destination the caller
// sized.
func DecodeFrame(frame []byte) ([]float32, Header, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return nil, h, err
	}
	if n := h.Shape.Len(); n > DecodeFrameMaxValues && n > DecodeFrameMaxRatio*h.Size {
		return nil, h, fmt.Errorf("%w: %dx%d = %d values in a %d-byte frame: over DecodeFrame's bound (use Decoder.Decode with a destination of the expected size)",
			ErrBadFrame, h.Shape.Rows, h.Shape.Cols, n, h.Size)
	}
	d, err := NewDecoder("software")
	if err != nil {
		return nil, h, err
	}
	defer d.Close()
	dst := make([]float32, h.Shape.Len())
	if err := d.Decode(dst, frame); err != nil {
		return nil, h, err
	}
	return dst, h, nil
}

// EncodeRecon encodes src with e and writes into recon what every Decoder
// yields for the frame: through e's own EncodeRecon when it has one (all
// encoders of this package do), else by decoding the frame with dec.
func EncodeRecon(e Encoder, dec *Decoder, dst []byte, src []float32, shape Shape, recon []float32) ([]byte, error) {
	if re, ok := e.(ReconEncoder); ok {
		return re.EncodeRecon(dst, src, shape, recon)
	}
	out, err := e.Encode(dst, src, shape)
	if err != nil {
		return out, err
	}
	if dec == nil {
		return dst, fmt.Errorf("gradcodec: %s: no decoder for the reconstruction", e.Name())
	}
	if err := dec.Decode(recon, out[len(dst):]); err != nil {
		return dst, err
	}
	return out, nil
}
