package video

// Small cgo helpers for what go-astiav v0.16.0 does not offer: writing and
// reading the luma plane of a frame, and flushing a decoder.

/*
#cgo pkg-config: libavcodec libavutil
#include <stdint.h>
#include <string.h>
#include <libavcodec/avcodec.h>
#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>

// vc_write_luma makes f writable and copies the w×h 8-bit picture src
// (stride w) into its first plane; other planes (chroma) are set to 128.
static int vc_write_luma(AVFrame *f, const uint8_t *src, int w, int h) {
	int r = av_frame_make_writable(f);
	if (r < 0) return r;
	if (f->width < w || f->height < h || !f->data[0]) return AVERROR(EINVAL);
	for (int y = 0; y < h; y++)
		memcpy(f->data[0] + (ptrdiff_t)y * f->linesize[0], src + (size_t)y * w, w);
	const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);
	if (!d) return AVERROR(EINVAL);
	for (int p = 1; p < 4 && f->data[p]; p++) {
		int ch = AV_CEIL_RSHIFT(f->height, d->log2_chroma_h);
		memset(f->data[p], 128, (size_t)f->linesize[p] * ch);
	}
	return 0;
}

// vc_luma returns the first plane of f (line size f->linesize[0]) when it
// holds a w×h picture of 8-bit samples in memory, else NULL.
static const uint8_t *vc_luma(const AVFrame *f, int w, int h) {
	if (!f->data[0] || f->width < w || f->height < h || f->linesize[0] < w) return NULL;
	const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);
	if (!d || d->comp[0].depth != 8 || (d->flags & AV_PIX_FMT_FLAG_HWACCEL)) return NULL;
	return f->data[0];
}

// vc_packet_set replaces the payload of p with a padded copy of src,
// reusing p's buffer when nothing else holds it and it is large enough (a
// new buffer per access unit costs hundreds of page faults at 2048×2048).
static int vc_packet_set(AVPacket *p, const uint8_t *src, int n) {
	if (p->buf && av_buffer_is_writable(p->buf) && p->buf->size >= (size_t)n + AV_INPUT_BUFFER_PADDING_SIZE) {
		p->data = p->buf->data;
		p->size = n;
		memcpy(p->data, src, n);
		memset(p->data + n, 0, AV_INPUT_BUFFER_PADDING_SIZE);
		return 0;
	}
	av_packet_unref(p);
	int r = av_new_packet(p, n);
	if (r < 0) return r;
	memcpy(p->data, src, n);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
)

// cPacket returns the AVPacket behind p. go-astiav v0.16.0 keeps it as the
// first field of Packet and offers no accessor; packetSelfCheck verifies
// this layout before the first use.
func cPacket(p *astiav.Packet) *C.AVPacket {
	return *(**C.AVPacket)(unsafe.Pointer(p))
}

var packetLayoutOK = sync.OnceValue(func() error {
	p := astiav.AllocPacket()
	defer p.Free()
	if err := p.AllocPayload(37); err != nil {
		return err
	}
	if c := cPacket(p); c == nil || c.size != 37 || p.Size() != 37 {
		return fmt.Errorf("gradcodec: go-astiav Packet layout is not the one of v0.16.0")
	}
	return nil
})

// packetBytes returns the payload of p without copying; valid until p is
// unreferenced.
func packetBytes(p *astiav.Packet) []byte {
	c := cPacket(p)
	if c.data == nil || c.size <= 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(c.data)), int(c.size))
}

// setPacket fills p with a padded copy of b (in p's buffer when it can).
func setPacket(p *astiav.Packet, b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty video packet", gradcodec.ErrBadFrame)
	}
	r := C.vc_packet_set(cPacket(p), (*C.uint8_t)(unsafe.Pointer(&b[0])), C.int(len(b)))
	if r < 0 {
		return fmt.Errorf("gradcodec: allocating a %d-byte packet: %w", len(b), astiav.Error(int(r)))
	}
	return nil
}

// writeLuma copies pix (w×h, stride w) into f's luma plane.
func writeLuma(f *astiav.Frame, pix []byte, w, h int) error {
	if len(pix) < w*h {
		return fmt.Errorf("gradcodec: internal: %d pixels for a %dx%d plane", len(pix), w, h)
	}
	r := C.vc_write_luma((*C.AVFrame)(f.UnsafePointer()), (*C.uint8_t)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h))
	if r < 0 {
		return fmt.Errorf("gradcodec: writing %dx%d plane: %w", w, h, astiav.Error(int(r)))
	}
	return nil
}

// lumaPlane returns the w×h luma plane of f in place (row y at
// plane[y*stride:]), valid until f is unreferenced.
func lumaPlane(f *astiav.Frame, w, h int) (plane []byte, stride int, _ error) {
	cf := (*C.AVFrame)(f.UnsafePointer())
	p := C.vc_luma(cf, C.int(w), C.int(h)) // no out-parameter: its address would escape to the heap
	if p == nil {
		return nil, 0, fmt.Errorf("%w: decoded picture %dx%d %s has no 8-bit %dx%d luma plane", gradcodec.ErrBadFrame, f.Width(), f.Height(), f.PixelFormat(), w, h)
	}
	stride = int(cf.linesize[0])
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), (h-1)*stride+w), stride, nil
}
