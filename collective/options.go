package collective

import "github.com/vccl/vccl/gradcodec"

// Option tunes one AllReduce or AllReduceAsync call. Options left out take
// the Comm's Config.
type Option func(*callOptions)

type callOptions struct {
	average       bool
	codec         string
	backend       string
	bpv           float64
	preset        string
	errorFeedback *bool
	layout        []gradcodec.Shape
	stream        string
	noWarmup      bool
	rawBelow      *int
}

// WithAverage divides the sum by the world size (the default is the sum).
func WithAverage() Option { return func(o *callOptions) { o.average = true } }

// WithCodec picks the codec for this call: "raw", "fp16", "bf16", "int8",
// "tensor", "h264" or "hevc".
func WithCodec(name string) Option { return func(o *callOptions) { o.codec = name } }

// WithBackend picks "auto", "nvenc" or "software" for this call.
func WithBackend(name string) Option { return func(o *callOptions) { o.backend = name } }

// WithBitsPerValue sets the target rate of the tensor or a video codec for
// this call.
func WithBitsPerValue(bpv float64) Option { return func(o *callOptions) { o.bpv = bpv } }

// WithPreset sets the encoder preset for this call.
func WithPreset(preset string) Option { return func(o *callOptions) { o.preset = preset } }

// WithErrorFeedback turns error feedback on or off for this call.
func WithErrorFeedback(on bool) Option { return func(o *callOptions) { o.errorFeedback = &on } }

// WithShape says the data is one rows × cols tensor in row-major order, so
// the codec sees its 2-D layout. Without a shape the data is one flat
// buffer that the codec lays out nearly square.
func WithShape(rows, cols int) Option {
	return func(o *callOptions) { o.layout = []gradcodec.Shape{{Rows: rows, Cols: cols}} }
}

// WithLayout says the data is several tensors one after another, each
// rows × cols in row-major order; their sizes must add up to len(data).
func WithLayout(layout []gradcodec.Shape) Option {
	return func(o *callOptions) { o.layout = append([]gradcodec.Shape(nil), layout...) }
}

// WithStream names the slot this data occupies step after step, for error
// feedback, rate control and warm-up counting. Use the same name on every
// rank and every step for the same tensor. The default is derived from the
// length and the layout, which mixes up different tensors of equal shape.
func WithStream(name string) Option { return func(o *callOptions) { o.stream = name } }

// WithoutWarmup compresses this call even while its stream is in warm-up.
func WithoutWarmup() Option { return func(o *callOptions) { o.noWarmup = true } }

// WithRawBelow overrides Config.RawBelow for this call.
func WithRawBelow(n int) Option { return func(o *callOptions) { o.rawBelow = &n } }
