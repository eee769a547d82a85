package gradcodec

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Codec describes one codec to the registry: its name and wire id, how its
// frames are laid out, and how to make its encoders and decoders. The
// pure-Go codecs (raw, fp16, bf16, int8) register themselves from this
// package; the FFmpeg-backed video codecs (h264, hevc) register from
// package github.com/vccl/vccl/gradcodec/video, which a program imports
// for its side effect (as database/sql drivers and image formats are):
//
//	import _ "github.com/vccl/vccl/gradcodec/video"
type Codec struct {
	// Name is what Options.Codec selects, e.g. "hevc".
	Name string
	// ID is the codec's id in the frame header. Ids are never reused or
	// renumbered: 1–6 are raw, fp16, bf16, int8, h264, hevc; 7 is tensor.
	ID uint8
	// Scaled says the frame carries one bfloat16 scale per group of
	// ScaleGroupRows rows after the header, and a zero-row bitmap when a
	// scale covers several rows (see frame.go).
	Scaled bool
	// CheckHeader validates the codec's own header fields (payload length
	// for the values, picture geometry) and returns an error wrapping
	// ErrBadFrame. It is called by ParseHeader after the common checks.
	// nil: the picture fields must be zero and any payload length goes.
	CheckHeader func(h Header) error
	// NewEncoder returns an encoder for opts (opts.Codec == Name).
	NewEncoder func(opts Options) (Encoder, error)
	// NewPayloadDecoder returns a decoder of this codec's payloads for the
	// given backend ("auto", "nvenc" or "software"). Decoder calls it the
	// first time it meets a frame of this codec.
	NewPayloadDecoder func(backend string) (PayloadDecoder, error)
	// HardwareDecoder, if set, reports whether a hardware decoder of this
	// codec opens on this machine; NewDecoder("nvenc") needs one codec
	// that says yes.
	HardwareDecoder func() bool
}

// PayloadDecoder decodes the payloads of one codec. Decoder hands it frames
// whose header, checksum, scales and zero-row bitmap are already verified;
// the bitmap's rows are zeroed by Decoder afterwards. It is used by one
// goroutine at a time.
type PayloadDecoder interface {
	// DecodePayload writes the h.Shape.Len() values of payload into dst,
	// using scales (nil unless the codec is Scaled). A payload that does
	// not decode gives an error wrapping ErrBadFrame.
	DecodePayload(dst []float32, h Header, payload []byte, scales []float32) error
	// Close frees the decoder's resources. It is idempotent.
	Close() error
}

var registry struct {
	sync.RWMutex
	byName map[string]*Codec
	byID   map[uint8]*Codec
}

// pluginPackages names the package that registers a codec which is not
// part of this package, for the error a program gets when it asks for one
// without importing it.
var pluginPackages = map[string]string{
	"h264": "github.com/vccl/vccl/gradcodec/video (needs cgo and FFmpeg's libavcodec)",
	"hevc": "github.com/vccl/vccl/gradcodec/video (needs cgo and FFmpeg's libavcodec)",
}

// Register makes a codec available by name and wire id. It panics when the
// name or id is taken, or a required field is missing, like sql.Register:
// that is a programming error found at start-up.
func Register(c Codec) {
	if c.Name == "" || c.ID == 0 || c.NewEncoder == nil || c.NewPayloadDecoder == nil {
		panic(fmt.Sprintf("gradcodec: Register: codec %q (id %d) lacks a name, id, NewEncoder or NewPayloadDecoder", c.Name, c.ID))
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.byName == nil {
		registry.byName = map[string]*Codec{}
		registry.byID = map[uint8]*Codec{}
	}
	if _, dup := registry.byName[c.Name]; dup {
		panic("gradcodec: Register called twice for codec " + c.Name)
	}
	if old, dup := registry.byID[c.ID]; dup {
		panic(fmt.Sprintf("gradcodec: Register: codec %s wants id %d, taken by %s", c.Name, c.ID, old.Name))
	}
	cc := c
	registry.byName[c.Name] = &cc
	registry.byID[c.ID] = &cc
}

// lookup returns the registered codec called name.
func lookup(name string) (*Codec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	c, ok := registry.byName[name]
	return c, ok
}

// lookupID returns the registered codec with wire id id.
func lookupID(id uint8) (*Codec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	c, ok := registry.byID[id]
	return c, ok
}

// Codecs returns the names of the registered codecs in the order of their
// wire ids: the baselines (raw, fp16, bf16, int8) first.
func Codecs() []string {
	registry.RLock()
	defer registry.RUnlock()
	cs := make([]*Codec, 0, len(registry.byID))
	for _, c := range registry.byID {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}

// Registered reports whether a codec called name is registered.
func Registered(name string) bool {
	_, ok := lookup(name)
	return ok
}

// CheckRegistered returns nil when a codec called name is registered, else
// an error wrapping ErrUnknownCodec that lists the registered codecs and,
// for a known plug-in, names the package to import.
func CheckRegistered(name string) error {
	if Registered(name) {
		return nil
	}
	return unknownCodec(name)
}

// unknownCodec is the error for a codec name that is not registered: it
// lists the registered ones and, for a known plug-in, the package to import.
func unknownCodec(name string) error {
	if pkg, ok := pluginPackages[name]; ok {
		return fmt.Errorf("%w %q: it is not registered in this program; import _ %s (registered: %s)",
			ErrUnknownCodec, name, pkg, strings.Join(Codecs(), ", "))
	}
	return fmt.Errorf("%w %q: available codecs are %s", ErrUnknownCodec, name, strings.Join(Codecs(), ", "))
}
