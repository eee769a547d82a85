// Package video registers the video codecs h264 and hevc with package
// gradcodec: gradient tensors laid out as 8-bit pictures and compressed by
// FFmpeg's encoders (libx264/libx265 on CPUs, NVENC where it opens) and
// decoders (FFmpeg's software decoders, NVDEC through cuvid where it
// opens). It needs cgo and FFmpeg's libavcodec; import it for its side
// effect:
//
//	import _ "github.com/vccl/vccl/gradcodec/video"
//
// Tensors of fewer than MinVideoValues values go out as int8 frames.
//
// # Quantization and layout (video codecs)
//
// Each row (or row group) gets the scale min(8·RMS, max|x|); values are
// rounded to 255 levels around 128 and clipped beyond the scale (error
// feedback carries the clipped part). All-zero rows decode as exact zeros.
// Rows of 32 to 4096 values become picture rows, so the codec sees the
// tensor's own 2-D structure; other shapes are laid out flat in a
// near-square picture. Width and height are padded to multiples of 16 by
// repeating the last column/row. Tensors taller than one frame (4096 rows or
// 4 Mpixels) are split into equal frames. Pictures are 8-bit gray (4:0:0)
// written into the frames directly (no swscale); NVENC gets 4:2:0 with
// chroma at 128. Every frame is an intra (IDR) picture with its parameter
// sets, so any frame decodes alone; SEI NAL units are dropped.
//
// # Rate control
//
// The caller asks for bits per value (whole frame: header, scales and
// checksum included), never a QP. A stream's control value s acts as a
// fractional QP: QP = floor(s) and the scales are stretched by
// 2^((s−QP)/6), so rate and error move smoothly with s. After each frame,
// s moves by log2(rate/target)/slope, the slope being re-estimated from
// successive frames (about 0.2 doublings per QP near 1.4 bits/value). The
// first frame of a stream (of each tensor shape) runs a secant search of up
// to four encodes, so the ring's first compressed step is already on
// target; a later frame more than 30% off is re-encoded once. In steady
// state a frame is encoded once. libx264 and libx265 are called directly
// (not through libavcodec's wrappers) with the QP set per picture
// (x264_picture_t.i_qpplus1, x265_picture.forceqp), so one context per
// picture size serves every QP; NVENC contexts (through libavcodec) are kept
// per size and QP, the four most recent open. On real MNIST MLP gradients
// every h264/hevc frame lands within 2% of 1.4 bits/value, and the tests
// check 20-frame averages within 10%.
//
// # Scale refit and reconstruction
//
// After encoding, each scale is replaced by the least-squares one,
// 127·Σx·q/Σq² over the decoded levels q. The scales lie outside the
// bitstream, so the rate does not change, the decoded tensor becomes the
// best multiple of what the codec delivered, and no scale group decodes
// worse than zeros (NMSE ≤ 1): on the output layer of the MNIST MLP
// (10×128) libx265 at 1 bit/value went from NMSE 1.28 to 0.94, and on the
// larger layers NMSE drops 1–4% (e.g. 0.0332 → 0.0318). The decoded levels
// are libx264's/libx265's own reconstruction (pic_out, with full
// reconstruction forced on), bit-exactly what any decoder yields, so the
// refit needs no decode; NVENC frames are decoded, on NVDEC where it opens.
// The same pass writes the reconstruction (EncodeRecon) and the
// error-feedback residual (EncodeResidual). EncodeFeedback
// (gradcodec.FeedbackEncoder, what the ring calls) also adds the old
// residual itself, in the quantisation pass, keeping the sum in the
// residual's memory for the refit to overwrite: error feedback needs no
// copy of the input and no pass of its own.
//
// Per frame, beyond the codec, vccl makes one pass over the input (residual
// added, finite check, scales and 8-bit levels, group by group while the
// group is in cache) and one over the reconstruction (refit, recon,
// residual), with the AVX2 kernels of internal/kern where the CPU has them.
// The reconstruction is read in place from the encoder's picture and the
// decoder dequantises from libavcodec's picture in place (one-frame
// tensors; taller ones are copied out frame by frame).
// BenchmarkVsBare prints vccl's speed beside bare libx264/libx265 on the
// same pictures, preset and QP.
//
// # Backends and presets
//
// Backend "auto" uses h264_nvenc/hevc_nvenc when they open (NVIDIA GPUs with
// NVENC) and libx264/libx265 otherwise; the decoder uses h264_cuvid/
// hevc_cuvid when they open and falls back to software for pictures they
// refuse (e.g. 4:0:0). "nvenc" insists on the hardware and fails with
// ErrBackendUnavailable naming what is available; "software" never tries it.
// H.264 and HEVC decoding is bit-exact by standard, so every rank decodes
// the same values whatever encoded them.
//
// Defaults, chosen from measurements on this project's 2-core machine
// (go test ./gradcodec -bench MLP; codec_rd on MNIST MLP gradients):
//
//   - DefaultOptions picks h264 with x264's ultrafast preset. On the
//     256×784 MLP gradient at 1.4 bits/value (BenchmarkVsBare), vccl's
//     h264 encode (error feedback included) runs at about 150–200 Mvalues/s
//     of CPU, 0.8× bare libx264, and decodes at about 180–250, 0.9× bare
//     libavcodec; hevc (libx265 ultrafast) encodes about 8 and decodes
//     about 50. The MNIST
//     example allreduces ~235K values about 700 times per epoch on each of 4
//     ranks sharing 2 cores: only x264 ultrafast fits its time budget.
//   - x264 with CABAC (superfast and slower presets) cuts NMSE at the same
//     rate by about 25% (geometric mean 0.085 → 0.065 on the MLP's w1/w2
//     gradients) but costs about 3× the CPU to encode and to decode; pick
//     Preset "superfast" or slower when bandwidth is scarcer than CPU.
//   - hevc (x265 ultrafast) is not clearly better at the same rate on these
//     gradients: NMSE 0.18–0.21 against x264's 0.19–0.26 on the 128×256
//     layer, 0.031–0.042 against 0.030–0.039 on the 256×784 layer, for
//     about ten times the CPU.
//   - psy-rd and adaptive quantization are always off: they trade PSNR for
//     perceived quality, which means nothing for tensors.
//
// FFmpeg's and x265's logging is silenced; set VCCL_FFMPEG_LOG=error (or
// warning, info, verbose, debug) to see it.
package video
