// Package gradcodec turns float32 gradient tensors into compact,
// self-describing byte frames and back. It holds the frame container, the
// codec interface and registry, the pure-Go codecs (raw fp32, fp16, bf16,
// int8) and an error feedback helper; the video codecs (H.264 and HEVC
// through FFmpeg, after "LLM.265: Video Codecs are Secretly Tensor Codecs",
// arXiv 2407.00467) plug in from package gradcodec/video. It knows nothing
// of ranks or sockets.
//
// # Use
//
//	enc, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "int8"}) // one per stream
//	frame, err := enc.Encode(nil, grad, gradcodec.Shape{Rows: 256, Cols: 784})
//	dec, err := gradcodec.NewDecoder("auto")                      // decodes any codec
//	err = dec.Decode(out, frame)                                   // len(out) == 256*784
//
// An Encoder is one stream of similar tensors (the same gradient slot step
// after step): it keeps the rate control state and the open encoder
// contexts. EncodeRecon (or the package function EncodeRecon) also returns
// what every decoder will yield, for error feedback and for the ring's
// "owner keeps the decoded value" rule, without decoding again.
//
// # Frame format
//
// See frame.go: magic "VCGC", version, codec id, rows, cols, picture
// geometry, payload length, one bfloat16 scale per row (or per group of
// rows holding about 256 values), a zero-row bitmap when scales are shared,
// the payload, and a CRC-32C. ParseHeader validates the header (and its
// Size splits concatenated frames); Decode also checks the checksum, that
// the video pictures have the announced size and that no value decodes to
// NaN/Inf. Truncated, corrupted or foreign frames give ErrBadFrame; a
// destination of the wrong length ErrShapeMismatch; NaN/Inf in an input
// ErrNonFinite with the count and the index of the first.
//
// # Codecs as plug-ins
//
// Codecs register themselves by name and wire id (Register, Codec), the
// way database/sql drivers and image formats do. This package is pure Go
// (it builds with CGO_ENABLED=0) and registers raw, fp16, bf16, int8 and
// tensor.
// The video codecs h264 and hevc need FFmpeg through cgo and register from
// package github.com/vccl/vccl/gradcodec/video:
//
//	import _ "github.com/vccl/vccl/gradcodec/video"
//
// Asking for a codec that is not registered gives ErrUnknownCodec naming
// the package to import; a frame of such a codec gives ErrBadFrame saying
// so. A plug-in builds its frames with FrameWriter, PutScales and
// AppendZeroMap and decodes them through a PayloadDecoder; the header,
// checksum, scales and zero-row bitmap are the container's job.
//
// # The tensor codec
//
// "tensor" (tensor.go) is a pure-Go codec built for gradients rather than
// pictures. One uniform dead-zone scalar quantiser covers the whole tensor:
// q = sign(x)·floor(|x|/Δ + 0.4), with one step Δ for every value (an equal
// step everywhere is what minimises the squared error at a given rate;
// scales per row or column would spend bits on rows that matter less). What
// rows and columns do differ in is their statistics, so they pick the
// entropy coder's context instead: each value's class is its expected
// magnitude relative to Δ, estimated from its row's and column's RMS in
// half-octaves (a byte per row and per column on the wire, each map sent
// only when the sample says it pays; with its map, an all-zero row or column
// costs nothing). Pairs of consecutive values of a class form one symbol
// (15×15 levels, larger values escaped as varints), coded per class in
// blocks of 128K symbols by klauspost/compress's huff0 (Huffman, four
// streams) or, where the commonest symbol has probability 0.6 or more, by
// its fse (tANS), which goes below one bit per symbol. Each level decodes to
// the mean of the values it holds in that class (three offsets per class on
// the wire).
//
// Rate control: the encoder estimates the frame size from the pair
// entropy of about 8K pairs sampled across every row and column, bisects
// log Δ on the first frame of a stream (re-encoding once if the frame
// misses the target by more than 5%), and on later frames takes two regula
// falsi steps around the last Δ, corrected by the ratio of coded to
// estimated bits it measured on the last frame. Steady-state frames are
// encoded once. Tensors under MinTensorValues go out as int8 frames.
//
// Measured on the MNIST MLP's and a small transformer's recorded weight
// gradients (examples/codec_rd), tensor's NMSE at 1.4 bits/value is a tenth
// of h264's (median over the MLP's weights) and half of it (the
// transformer's), at every rate from 0.5 to 3 bits/value; see the README.
//
// # Concurrency
//
// Encoders and Decoders are not safe for concurrent use; use one per
// goroutine. Different Encoders and Decoders may run in parallel.
// ErrorFeedback is safe for concurrent use.
package gradcodec
