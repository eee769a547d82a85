package gradcodec

import (
	"fmt"
)

// Decoder decodes frames of any codec (it reads the codec id from the frame
// header), keeping video decoder contexts open between calls. It is not safe
// for concurrent use; keep one per goroutine.
type Decoder struct {
	backend string
	scales  []float32
	video   map[uint8]*videoDecoder
	closed  bool
}

// NewDecoder returns a Decoder. backend is "auto" (NVDEC through the cuvid
// decoders when they open, else FFmpeg's software decoders), "nvenc" (NVDEC
// only; an error wrapping ErrBackendUnavailable when it does not open) or
// "software"; "" means "auto".
func NewDecoder(backend string) (*Decoder, error) {
	switch backend {
	case "":
		backend = "auto"
	case "auto", "software":
	case "nvenc":
		if !hwDecoderAvailable("h264") && !hwDecoderAvailable("hevc") {
			return nil, fmt.Errorf("gradcodec: decoder backend nvenc: %w: h264_cuvid and hevc_cuvid do not open on this machine; available: software (h264, hevc)", ErrBackendUnavailable)
		}
	default:
		return nil, fmt.Errorf("gradcodec: %w: backend %q, want auto, nvenc or software", ErrBackendUnavailable, backend)
	}
	return &Decoder{backend: backend, video: map[uint8]*videoDecoder{}}, nil
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
	id := codecIDs[h.Codec]
	switch id {
	case idH264, idHEVC:
		vd := d.video[id]
		if vd == nil {
			vd = newVideoDecoder(h.Codec, d.backend)
			d.video[id] = vd
		}
		if err := vd.decode(dst, h, body, d.scales); err != nil {
			return err
		}
		applyZeroMap(dst, h.Shape, zmap)
		return nil
	default:
		return decodeSimple(dst, h, body, d.scales, zmap)
	}
}

// Close frees the decoder contexts. It is idempotent.
func (d *Decoder) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	for _, vd := range d.video {
		vd.close()
	}
	d.video = nil
	return nil
}

// DecodeFrame is a convenience that decodes frame with a throw-away
// software Decoder and returns the values and the header.
func DecodeFrame(frame []byte) ([]float32, Header, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return nil, h, err
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
