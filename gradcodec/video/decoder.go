package video

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
)

// videoDecoder decodes the video payload of one codec. It keeps a software
// decoder and, where NVDEC opens, a cuvid decoder; under "auto" a frame the
// cuvid decoder cannot handle (e.g. a 4:0:0 picture) falls back to software.
type videoDecoder struct {
	codec   string
	backend string
	sw, hw  *astiav.CodecContext
	hwOK    bool // try the cuvid decoder first
	frame   *astiav.Frame
	pkt     *astiav.Packet
	pix     []byte
}

func newVideoDecoder(codec, backend string) *videoDecoder {
	quietFFmpeg()
	d := &videoDecoder{codec: codec, backend: backend}
	d.hwOK = backend != "software" && hwDecoderAvailable(codec)
	d.frame = astiav.AllocFrame()
	d.pkt = astiav.AllocPacket()
	return d
}

var _ gradcodec.PayloadDecoder = (*videoDecoder)(nil)

// Close frees the decoder contexts. It is idempotent.
func (d *videoDecoder) Close() error {
	if d.frame == nil {
		return nil
	}
	for _, cc := range []*astiav.CodecContext{d.sw, d.hw} {
		if cc != nil {
			cc.Free()
		}
	}
	d.sw, d.hw = nil, nil
	d.frame.Free()
	d.pkt.Free()
	d.frame, d.pkt = nil, nil
	return nil
}

// DecodePayload decodes a video payload (after the scales) into dst.
func (d *videoDecoder) DecodePayload(dst []float32, h gradcodec.Header, body []byte, scales []float32) error {
	if h.Shape.Len() == 0 {
		return nil
	}
	l, s := planLayout(h.Shape), h.Shape
	packed := false // the pictures went to d.pix
	err := d.pictures(l, body, func(f int, plane []byte, stride int) {
		switch {
		case l.RowMode: // tensor row r is row r − f·FrameH of frame f
			r0 := f * l.FrameH
			readRows(dst, plane, stride, r0, min(r0+l.FrameH, s.Rows), s, scales)
		case l.Frames == 1 && stride == l.W: // flat, and packed already
			readRows(dst, plane, l.Stride, 0, s.Rows, s, scales)
		default:
			d.pix = resize(d.pix, l.W*l.FrameH*l.Frames)
			copyPlane(d.pix[f*l.W*l.FrameH:], l.W, plane, stride, l.W, l.FrameH)
			packed = true
		}
	})
	if err != nil {
		return err
	}
	if packed {
		readRows(dst, d.pix, l.Stride, 0, s.Rows, s, scales)
	}
	return nil
}

// pixels decodes the pictures of a video payload into d.pix (W per row).
func (d *videoDecoder) pixels(l picLayout, body []byte) error {
	fsize := l.W * l.FrameH
	d.pix = resize(d.pix, fsize*l.Frames)
	return d.pictures(l, body, func(f int, plane []byte, stride int) {
		copyPlane(d.pix[f*fsize:], l.W, plane, stride, l.W, l.FrameH)
	})
}

// pictures decodes the pictures of a video payload and hands each to use
// in place (row y at plane[y*stride:], valid during the call).
func (d *videoDecoder) pictures(l picLayout, body []byte, use func(f int, plane []byte, stride int)) error {
	if err := packetLayoutOK(); err != nil {
		return err
	}
	rest := body
	for f := 0; f < l.Frames; f++ {
		if len(rest) < 4 {
			return fmt.Errorf("%w: %s payload ends before frame %d of %d", gradcodec.ErrBadFrame, d.codec, f, l.Frames)
		}
		n := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if n == 0 || uint64(n) > uint64(len(rest)) {
			return fmt.Errorf("%w: %s frame %d claims %d bytes, %d left", gradcodec.ErrBadFrame, d.codec, f, n, len(rest))
		}
		if err := d.picture(rest[:n], l.W, l.FrameH, func(plane []byte, stride int) { use(f, plane, stride) }); err != nil {
			return fmt.Errorf("%s frame %d of %d: %w", d.codec, f, l.Frames, err)
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d stray bytes after %d %s frames", gradcodec.ErrBadFrame, len(rest), l.Frames, d.codec)
	}
	return nil
}

// picture decodes one access unit (a w×h picture) and hands the picture to
// use (see pictures).
func (d *videoDecoder) picture(au []byte, w, h int, use func(plane []byte, stride int)) error {
	if d.hwOK {
		err := d.pictureWith(&d.hw, hwDecoders[d.codec], au, w, h, use)
		if err == nil {
			return nil
		}
		if d.backend == "nvenc" {
			return err
		}
		d.hwOK = false // software from now on
	}
	return d.pictureWith(&d.sw, swDecoders[d.codec], au, w, h, use)
}

func (d *videoDecoder) pictureWith(ccp **astiav.CodecContext, name string, au []byte, w, h int, use func(plane []byte, stride int)) error {
	if *ccp == nil {
		cc, err := openDecoder(name)
		if err != nil {
			return err
		}
		*ccp = cc
	}
	cc := *ccp
	reset := func() { cc.Free(); *ccp = nil }
	if err := setPacket(d.pkt, au); err != nil {
		return err
	}
	err := cc.SendPacket(d.pkt) // d.pkt keeps its buffer for the next one
	if err != nil {
		reset()
		return fmt.Errorf("%w: %s rejected the access unit: %v", gradcodec.ErrBadFrame, name, err)
	}
	err = cc.ReceiveFrame(d.frame)
	drained := false
	if errors.Is(err, astiav.ErrEagain) {
		// The decoder holds the picture back: drain it, then start afresh.
		_ = cc.SendPacket(nil)
		err = cc.ReceiveFrame(d.frame)
		drained = true
	}
	if err != nil {
		reset()
		return fmt.Errorf("%w: %s produced no picture: %v", gradcodec.ErrBadFrame, name, err)
	}
	defer d.frame.Unref()
	if d.frame.Width() != w || d.frame.Height() != h {
		reset()
		return fmt.Errorf("%w: %s picture is %dx%d, header says %dx%d", gradcodec.ErrBadFrame, name, d.frame.Width(), d.frame.Height(), w, h)
	}
	plane, stride, err := lumaPlane(d.frame, w, h)
	if err != nil {
		reset()
		return err
	}
	use(plane, stride)
	if drained {
		reset()
		return nil
	}
	// One access unit must hold exactly one picture.
	d.frame.Unref()
	if err := cc.ReceiveFrame(d.frame); err == nil {
		reset()
		return fmt.Errorf("%w: %s access unit holds more than one picture", gradcodec.ErrBadFrame, name)
	}
	return nil
}
