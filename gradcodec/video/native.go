package video

// The software backend calls libx264 and libx265 directly rather than
// through libavcodec's wrappers, for three things the wrappers hide:
//
//   - a per-picture QP (x264_picture_t.i_qpplus1, x265_picture.forceqp), so
//     one open context serves every QP the rate control picks; FFmpeg 5.1's
//     libx264 wrapper reconfigures only what x264_encoder_reconfig accepts,
//     which is not the constant QP, and its libx265 wrapper reconfigures
//     nothing;
//   - the encoder's own reconstruction (pic_out), which is bit-exactly what
//     every decoder yields (full reconstruction forced on), so error feedback
//     needs no decode;
//   - the input picture read in place from vccl's quantised plane, with no
//     copy into an AVFrame and no chroma planes (4:0:0).
//
// The bitstreams are the same standard H.264/HEVC ones (4:0:0, intra only,
// parameter sets in every access unit); decoding stays with libavcodec.

/*
#cgo pkg-config: x264 x265
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <x264.h>
#include <x265.h>

// The outputs of an encode live in the context, not in Go variables
// whose address a call would take (each such variable is a heap
// allocation per frame).
typedef struct {
	x264_t *enc;
	x264_picture_t in, out;
	int64_t pts;
	x264_nal_t *nals; // the last encode's NAL units
	int nnal;
	int rstride;      // row stride of the reconstruction
} vc_x264;

static vc_x264 *vc_x264_open(const char *preset, int w, int h, int threads, char *err, int errlen) {
	x264_param_t p;
	int known = 0;
	for (int i = 0; x264_preset_names[i]; i++) known |= !strcmp(preset, x264_preset_names[i]);
	if (!known || x264_param_default_preset(&p, preset, "zerolatency") < 0) {
		snprintf(err, errlen, "unknown preset %s", preset);
		return NULL;
	}
	p.i_csp = X264_CSP_I400;
	p.i_width = w;
	p.i_height = h;
	p.i_threads = threads;
	p.b_sliced_threads = threads > 1;
	p.i_lookahead_threads = 1;
	p.i_keyint_max = 1;
	p.i_keyint_min = 1;
	p.i_scenecut_threshold = 0;
	p.i_bframe = 0;
	p.rc.i_lookahead = 0;
	p.i_sync_lookahead = 0;
	p.rc.b_mb_tree = 0;
	p.rc.i_aq_mode = 0;
	p.analyse.b_psy = 0;
	p.rc.i_rc_method = X264_RC_CQP;
	// In CQP mode x264 clamps every QP, forced ones too, to the span of
	// its I/P/B constants, and the I/P and P/B factors to at most 10 (20
	// QPs): P at 31 with both factors at 10 opens QPs 11 to 51.
	p.rc.i_qp_constant = 31;
	p.rc.f_ip_factor = 10;
	p.rc.f_pb_factor = 10;
	p.b_annexb = 1;
	p.b_repeat_headers = 1;
	p.b_aud = 0;
	p.i_log_level = X264_LOG_NONE;
	p.b_full_recon = 1;
	p.i_fps_num = 25;
	p.i_fps_den = 1;
	p.b_vfr_input = 0;
	x264_t *e = x264_encoder_open(&p);
	if (!e) {
		snprintf(err, errlen, "x264_encoder_open failed for %dx%d preset %s", w, h, preset);
		return NULL;
	}
	vc_x264 *v = calloc(1, sizeof(vc_x264));
	if (!v) { x264_encoder_close(e); snprintf(err, errlen, "out of memory"); return NULL; }
	v->enc = e;
	x264_picture_init(&v->in);
	v->in.img.i_csp = X264_CSP_I400;
	v->in.img.i_plane = 1;
	return v;
}

static int vc_x264_encode(vc_x264 *v, uint8_t *plane, int stride, int qp) {
	v->in.img.plane[0] = plane;
	v->in.img.i_stride[0] = stride;
	v->in.i_qpplus1 = qp + 1;
	v->in.i_type = X264_TYPE_IDR;
	v->in.i_pts = v->pts++;
	v->nals = NULL;
	v->nnal = 0;
	int r = x264_encoder_encode(v->enc, &v->nals, &v->nnal, &v->in, &v->out);
	v->in.img.plane[0] = NULL; // x264 copied the picture; keep no Go pointer
	return r;
}

static uint8_t *vc_x264_recon(vc_x264 *v) {
	if (v->out.img.i_plane < 1) return NULL;
	v->rstride = v->out.img.i_stride[0];
	return v->out.img.plane[0];
}

static void vc_x264_close(vc_x264 *v) {
	if (!v) return;
	x264_encoder_close(v->enc);
	free(v);
}

typedef struct {
	x265_param *p;
	x265_encoder *enc;
	x265_picture *in, *out;
	int64_t pts;
	x265_nal *nals; // the last encode's NAL units (see vc_x264)
	uint32_t nnal;
	int rstride, depth; // row stride and bit depth of the reconstruction
} vc_x265;

static void vc_x265_close(vc_x265 *v) {
	if (!v) return;
	if (v->enc) x265_encoder_close(v->enc);
	if (v->in) x265_picture_free(v->in);
	if (v->out) x265_picture_free(v->out);
	if (v->p) x265_param_free(v->p);
	free(v);
}

static vc_x265 *vc_x265_open(const char *preset, int w, int h, int threads, char *err, int errlen) {
	vc_x265 *v = calloc(1, sizeof(vc_x265));
	if (!v) { snprintf(err, errlen, "out of memory"); return NULL; }
	int known = 0;
	for (int i = 0; x265_preset_names[i]; i++) known |= !strcmp(preset, x265_preset_names[i]);
	v->p = x265_param_alloc();
	if (!known || !v->p || x265_param_default_preset(v->p, preset, "zerolatency") < 0) {
		snprintf(err, errlen, "unknown preset %s", preset);
		vc_x265_close(v);
		return NULL;
	}
	char pools[16];
	snprintf(pools, sizeof pools, "%d", threads);
	const char *kv[][2] = {
		{"keyint", "1"}, {"min-keyint", "1"}, {"bframes", "0"}, {"rc-lookahead", "0"},
		{"frame-threads", "1"}, {"pools", threads > 1 ? pools : "none"}, {"wpp", threads > 1 ? "1" : "0"},
		{"log-level", "none"}, {"repeat-headers", "1"}, {"info", "0"}, {"aq-mode", "0"},
		{"psy-rd", "0"}, {"psy-rdoq", "0"}, {"annexb", "1"}, {"qp", "30"}, {"hash", "0"},
	};
	for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
		if (x265_param_parse(v->p, kv[i][0], kv[i][1]) < 0) {
			snprintf(err, errlen, "x265 rejects %s=%s", kv[i][0], kv[i][1]);
			vc_x265_close(v);
			return NULL;
		}
	}
	v->p->sourceWidth = w;
	v->p->sourceHeight = h;
	v->p->fpsNum = 25;
	v->p->fpsDenom = 1;
	v->p->internalCsp = X265_CSP_I400;
	v->enc = x265_encoder_open(v->p);
	if (!v->enc) {
		snprintf(err, errlen, "x265_encoder_open failed for %dx%d preset %s", w, h, preset);
		vc_x265_close(v);
		return NULL;
	}
	v->in = x265_picture_alloc();
	v->out = x265_picture_alloc();
	if (!v->in || !v->out) { snprintf(err, errlen, "out of memory"); vc_x265_close(v); return NULL; }
	x265_picture_init(v->p, v->in);
	x265_picture_init(v->p, v->out);
	v->in->colorSpace = X265_CSP_I400;
	v->in->bitDepth = 8;
	return v;
}

static int vc_x265_encode(vc_x265 *v, uint8_t *plane, int stride, int qp) {
	v->in->planes[0] = plane;
	v->in->stride[0] = stride;
	v->in->forceqp = qp + 1;
	v->in->sliceType = X265_TYPE_IDR;
	v->in->pts = v->pts++;
	v->nals = NULL;
	v->nnal = 0;
	int r = x265_encoder_encode(v->enc, &v->nals, &v->nnal, v->in, v->out);
	v->in->planes[0] = NULL; // x265 copied the picture; keep no Go pointer
	return r;
}

static uint8_t *vc_x265_recon(vc_x265 *v) {
	v->rstride = v->out->stride[0];
	v->depth = v->out->bitDepth;
	return (uint8_t *)v->out->planes[0];
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// x264MinQP is the lowest QP the libx264 contexts of openNative encode at
// (see vc_x264_open).
const x264MinQP = 11

// nativeEncoder is one open libx264 or libx265 context for one picture
// size; every picture it encodes is an IDR picture at the QP given.
type nativeEncoder struct {
	hevc bool
	w, h int
	x264 *C.vc_x264
	x265 *C.vc_x265
}

// openNative opens libx264 (hevc false) or libx265 for w×h 4:0:0 pictures.
func openNative(hevc bool, preset string, w, h, threads int) (*nativeEncoder, error) {
	cp := C.CString(preset)
	defer C.free(unsafe.Pointer(cp))
	var errBuf [256]C.char
	n := &nativeEncoder{hevc: hevc, w: w, h: h}
	name := "libx264"
	if hevc {
		name = "libx265"
		n.x265 = C.vc_x265_open(cp, C.int(w), C.int(h), C.int(max(threads, 1)), &errBuf[0], C.int(len(errBuf)))
		if n.x265 == nil {
			return nil, fmt.Errorf("gradcodec: opening %s %dx%d preset %s: %s", name, w, h, preset, C.GoString(&errBuf[0]))
		}
	} else {
		n.x264 = C.vc_x264_open(cp, C.int(w), C.int(h), C.int(max(threads, 1)), &errBuf[0], C.int(len(errBuf)))
		if n.x264 == nil {
			return nil, fmt.Errorf("gradcodec: opening %s %dx%d preset %s: %s", name, w, h, preset, C.GoString(&errBuf[0]))
		}
	}
	return n, nil
}

// close frees the context. It is idempotent.
func (n *nativeEncoder) close() {
	if n.x264 != nil {
		C.vc_x264_close(n.x264)
		n.x264 = nil
	}
	if n.x265 != nil {
		C.vc_x265_close(n.x265)
		n.x265 = nil
	}
}

// encode encodes the w×h picture plane (row stride w; the encoder copies
// it during the call) at qp and appends its access unit without SEI NAL
// units (4-byte start codes) to dst. rec is the encoder's reconstruction,
// read in place: row y at rec[y*stride:], valid until the next call of
// encode or close.
func (n *nativeEncoder) encode(dst []byte, plane []byte, qp int) (_ []byte, rec []byte, stride int, _ error) {
	if len(plane) < n.w*n.h {
		return dst, nil, 0, fmt.Errorf("gradcodec: internal: %d pixels for a %dx%d picture", len(plane), n.w, n.h)
	}
	pp := (*C.uint8_t)(unsafe.Pointer(&plane[0]))
	var recon *C.uint8_t
	var rstride C.int
	if n.hevc {
		r := C.vc_x265_encode(n.x265, pp, C.int(n.w), C.int(qp))
		nals, nn := n.x265.nals, n.x265.nnal
		if r <= 0 || nn == 0 {
			return dst, nil, 0, fmt.Errorf("gradcodec: libx265 returned %d with %d NAL units for a %dx%d picture at qp %d", int(r), int(nn), n.w, n.h, qp)
		}
		for _, nal := range unsafe.Slice(nals, int(nn)) {
			if nal._type == 39 || nal._type == 40 { // prefix/suffix SEI
				continue
			}
			dst = appendNAL(dst, unsafe.Slice((*byte)(unsafe.Pointer(nal.payload)), int(nal.sizeBytes)))
		}
		recon = C.vc_x265_recon(n.x265)
		rstride = n.x265.rstride
		if depth := n.x265.depth; depth != 8 {
			return dst, nil, 0, fmt.Errorf("gradcodec: libx265 reconstruction has %d-bit samples, want 8", int(depth))
		}
	} else {
		r := C.vc_x264_encode(n.x264, pp, C.int(n.w), C.int(qp))
		nals, nn := n.x264.nals, n.x264.nnal
		if r <= 0 || nn <= 0 {
			return dst, nil, 0, fmt.Errorf("gradcodec: libx264 returned %d with %d NAL units for a %dx%d picture at qp %d", int(r), int(nn), n.w, n.h, qp)
		}
		for _, nal := range unsafe.Slice(nals, int(nn)) {
			if nal.i_type == 6 { // SEI
				continue
			}
			dst = appendNAL(dst, unsafe.Slice((*byte)(unsafe.Pointer(nal.p_payload)), int(nal.i_payload)))
		}
		recon = C.vc_x264_recon(n.x264)
		rstride = n.x264.rstride
	}
	if recon == nil || int(rstride) < n.w {
		return dst, nil, 0, fmt.Errorf("gradcodec: %s gave no reconstruction", n.name())
	}
	stride = int(rstride)
	return dst, unsafe.Slice((*byte)(unsafe.Pointer(recon)), (n.h-1)*stride+n.w), stride, nil
}

// encodeBare encodes like encode but keeps nothing: the codec's own cost,
// for the benchmarks' baseline. It returns the access unit's size.
func (n *nativeEncoder) encodeBare(plane []byte, qp int) (int, error) {
	if len(plane) < n.w*n.h {
		return 0, fmt.Errorf("gradcodec: internal: %d pixels for a %dx%d picture", len(plane), n.w, n.h)
	}
	pp := (*C.uint8_t)(unsafe.Pointer(&plane[0]))
	size := 0
	if n.hevc {
		if r := C.vc_x265_encode(n.x265, pp, C.int(n.w), C.int(qp)); r <= 0 {
			return 0, fmt.Errorf("gradcodec: libx265 returned %d", int(r))
		}
		for _, nal := range unsafe.Slice(n.x265.nals, int(n.x265.nnal)) {
			size += int(nal.sizeBytes)
		}
		return size, nil
	}
	if r := C.vc_x264_encode(n.x264, pp, C.int(n.w), C.int(qp)); r <= 0 {
		return 0, fmt.Errorf("gradcodec: libx264 returned %d", int(r))
	}
	for _, nal := range unsafe.Slice(n.x264.nals, int(n.x264.nnal)) {
		size += int(nal.i_payload)
	}
	return size, nil
}

func (n *nativeEncoder) name() string {
	if n.hevc {
		return "libx265"
	}
	return "libx264"
}

// appendNAL appends one Annex-B NAL unit with a 4-byte start code.
func appendNAL(dst, nal []byte) []byte {
	switch {
	case len(nal) >= 4 && nal[0] == 0 && nal[1] == 0 && nal[2] == 0 && nal[3] == 1:
	case len(nal) >= 3 && nal[0] == 0 && nal[1] == 0 && nal[2] == 1:
		dst = append(dst, 0)
	default:
		dst = append(dst, 0, 0, 0, 1)
	}
	return append(dst, nal...)
}
