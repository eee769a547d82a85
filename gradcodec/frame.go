package gradcodec

import (
	"encoding/binary"
	"fmt"

	"github.com/vccl/vccl/internal/kern"
)

// Wire format of one frame (all integers little-endian):
//
//	offset size field
//	0      4    magic "VCGC"
//	4      1    version (FormatVersion)
//	5      1    codec id (see Codec.ID)
//	6      2    reserved, must be 0
//	8      4    rows
//	12     4    cols
//	16     2    picture width in pixels (video codecs; 0 otherwise)
//	18     2    picture height of each video frame (0 otherwise)
//	20     2    number of video frames (0 otherwise)
//	22     1    QP the video frames were encoded with (informational)
//	23     1    reserved, must be 0
//	24     4    payload length in bytes
//	28     2*S  S quantization scales as bfloat16 (int8 and video codecs; one per
//	            group of scaleGroupRows rows)
//	…      Z    zero-row bitmap, bit r%8 of byte r/8 set when row r is all
//	            zeros; present only when a scale covers several rows
//	…      P    payload
//	end-4  4    CRC-32C (Castagnoli) of every byte before it (kern.UpdateCRC32C)
//
// The video payload is NumFrames records of [u32 length][Annex-B access unit].
const (
	// FormatVersion is the version of the frame layout written by this package.
	FormatVersion = 1
	// HeaderSize is the size of the fixed frame header in bytes.
	HeaderSize = 28
	// TrailerSize is the size of the CRC trailer in bytes.
	TrailerSize = 4
	// maxValues bounds rows*cols of one frame so sizes never overflow.
	maxValues = 1 << 31
)

var frameMagic = [4]byte{'V', 'C', 'G', 'C'}

// Wire ids of the codecs this package registers (see Codec.ID). Never
// renumber.
const (
	idRaw  = 1
	idFP16 = 2
	idBF16 = 3
	idInt8 = 4
	// idTensor is the entropy-coded tensor codec (tensor.go).
	idTensor = 7
)

// Wire ids of the codecs registered by other packages of this module. They
// are reserved here so that no two plug-ins take the same id.
const (
	// IDH264 is the wire id of h264 (package gradcodec/video).
	IDH264 = 5
	// IDHEVC is the wire id of hevc (package gradcodec/video).
	IDHEVC = 6
)

// Header is the decoded fixed part of a frame.
type Header struct {
	Version   int
	Codec     string // codec name, e.g. "hevc"
	Shape     Shape
	PicWidth  int // video picture width in pixels; 0 for non-video codecs
	PicHeight int // height of each video frame in pixels; 0 for non-video codecs
	NumFrames int // number of video frames; 0 for non-video codecs
	QP        int // QP of the video frames (informational)
	Scales    int // number of bfloat16 scales after the header
	ZeroMap   int // bytes of zero-row bitmap after the scales
	Payload   int // payload length in bytes
	// Size is the length in bytes of the whole frame, header to checksum
	// included; a stream of concatenated frames can be split with it.
	Size int
}

// BitsPerValue returns the cost of the whole frame per tensor value.
func (h Header) BitsPerValue() float64 {
	if h.Shape.Len() == 0 {
		return 0
	}
	return 8 * float64(h.Size) / float64(h.Shape.Len())
}

// ScaleGroupRows returns how many consecutive tensor rows share one scale
// in the frame of a Scaled codec: one per row when rows hold at least 256
// values, else enough rows to make about 256 values, so that scales never
// cost more than 1/16 bit per value.
func ScaleGroupRows(s Shape) int {
	if s.Cols >= 256 || s.Cols <= 0 {
		return 1
	}
	return (256 + s.Cols - 1) / s.Cols
}

// ScaleGroups returns the number of scales in the frame of a Scaled codec.
func ScaleGroups(s Shape) int {
	if s.Rows <= 0 {
		return 0
	}
	g := ScaleGroupRows(s)
	return (s.Rows + g - 1) / g
}

// ZeroMapSize returns the size in bytes of the zero-row bitmap in the frame
// of a Scaled codec: present only when a scale covers several rows.
func ZeroMapSize(s Shape) int {
	if ScaleGroups(s) == 0 || ScaleGroupRows(s) == 1 {
		return 0
	}
	return (s.Rows + 7) / 8
}

// frameExtras returns the number of scales and the zero-map bytes of a
// frame of codec c.
func frameExtras(c *Codec, s Shape) (scales, zeroMap int) {
	if c == nil || !c.Scaled {
		return 0, 0
	}
	return ScaleGroups(s), ZeroMapSize(s)
}

// ParseHeader reads and validates the fixed header at the start of b. It
// checks the magic, version, codec id and that the sizes are consistent; it
// does not verify the checksum (Decoder.Decode does). Errors wrap
// ErrBadFrame. b may be longer than the frame: Header.Size tells where the
// frame ends.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize+TrailerSize {
		return h, fmt.Errorf("%w: %d bytes is shorter than the %d-byte minimum", ErrBadFrame, len(b), HeaderSize+TrailerSize)
	}
	if [4]byte(b[0:4]) != frameMagic {
		return h, fmt.Errorf("%w: magic %q is not %q (not a gradcodec frame)", ErrBadFrame, b[0:4], frameMagic[:])
	}
	h.Version = int(b[4])
	if h.Version != FormatVersion {
		return h, fmt.Errorf("%w: format version %d, this build reads version %d", ErrBadFrame, h.Version, FormatVersion)
	}
	id := b[5]
	c, ok := lookupID(id)
	if !ok {
		if id == IDH264 || id == IDHEVC {
			return h, fmt.Errorf("%w: codec id %d is a video codec, not registered in this program (import _ github.com/vccl/vccl/gradcodec/video, which needs cgo)", ErrBadFrame, id)
		}
		return h, fmt.Errorf("%w: unknown codec id %d", ErrBadFrame, id)
	}
	h.Codec = c.Name
	if b[6] != 0 || b[7] != 0 || b[23] != 0 {
		return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrBadFrame)
	}
	rows := binary.LittleEndian.Uint32(b[8:])
	cols := binary.LittleEndian.Uint32(b[12:])
	if uint64(rows)*uint64(cols) >= maxValues {
		return h, fmt.Errorf("%w: shape %dx%d is too large", ErrBadFrame, rows, cols)
	}
	if (rows == 0) != (cols == 0) {
		return h, fmt.Errorf("%w: shape %dx%d is degenerate", ErrBadFrame, rows, cols)
	}
	h.Shape = Shape{int(rows), int(cols)}
	h.PicWidth = int(binary.LittleEndian.Uint16(b[16:]))
	h.PicHeight = int(binary.LittleEndian.Uint16(b[18:]))
	h.NumFrames = int(binary.LittleEndian.Uint16(b[20:]))
	h.QP = int(b[22])
	h.Payload = int(binary.LittleEndian.Uint32(b[24:]))
	h.Scales, h.ZeroMap = frameExtras(c, h.Shape)
	size := uint64(HeaderSize) + 2*uint64(h.Scales) + uint64(h.ZeroMap) + uint64(h.Payload) + TrailerSize
	if size > uint64(len(b)) {
		return h, fmt.Errorf("%w: frame needs %d bytes, only %d present (truncated)", ErrBadFrame, size, len(b))
	}
	h.Size = int(size)
	if c.CheckHeader != nil {
		if err := c.CheckHeader(h); err != nil {
			return h, err
		}
	} else if (h.PicWidth | h.PicHeight | h.NumFrames | h.QP) != 0 {
		return h, fmt.Errorf("%w: picture fields set for codec %s", ErrBadFrame, c.Name)
	}
	return h, nil
}

// verifyFrame parses the header of frame and checks its checksum and that
// frame holds exactly one frame.
func verifyFrame(frame []byte) (Header, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return h, err
	}
	if h.Size != len(frame) {
		return h, fmt.Errorf("%w: %d trailing bytes after the %d-byte frame", ErrBadFrame, len(frame)-h.Size, h.Size)
	}
	body := frame[:h.Size-TrailerSize]
	want := binary.LittleEndian.Uint32(frame[h.Size-TrailerSize:])
	if got := kern.UpdateCRC32C(0, body); got != want {
		return h, fmt.Errorf("%w: checksum %08x, header says %08x (corrupted)", ErrBadFrame, got, want)
	}
	return h, nil
}

// FrameWriter builds one frame appended to a destination slice: Begin
// writes the header, the codec appends its scales (PutScales), zero-row
// bitmap (AppendZeroMap) and payload to Buf, and Finish fills in the
// payload length and the checksum.
type FrameWriter struct {
	// Buf is the destination slice; append the frame's sections to it.
	Buf   []byte
	start int
	pre   int // bytes of scales and zero map between header and payload
}

// Begin appends the fixed header of a frame of codec id holding shape s
// (with a zero payload length) to dst. pw, ph, nf and qp are the picture
// fields of video codecs, zero for others.
func (w *FrameWriter) Begin(dst []byte, id uint8, s Shape, pw, ph, nf, qp int) {
	w.start = len(dst)
	c, _ := lookupID(id)
	ns, nz := frameExtras(c, s)
	w.pre = 2*ns + nz
	var hdr [HeaderSize]byte
	copy(hdr[:], frameMagic[:])
	hdr[4] = FormatVersion
	hdr[5] = id
	binary.LittleEndian.PutUint32(hdr[8:], uint32(s.Rows))
	binary.LittleEndian.PutUint32(hdr[12:], uint32(s.Cols))
	binary.LittleEndian.PutUint16(hdr[16:], uint16(pw))
	binary.LittleEndian.PutUint16(hdr[18:], uint16(ph))
	binary.LittleEndian.PutUint16(hdr[20:], uint16(nf))
	hdr[22] = uint8(qp)
	w.Buf = append(dst, hdr[:]...)
}

// Finish writes the payload length (everything appended after the header,
// scales and zero map) and appends the checksum. It returns the extended
// destination slice.
func (w *FrameWriter) Finish() []byte {
	payload := len(w.Buf) - w.start - HeaderSize - w.pre
	binary.LittleEndian.PutUint32(w.Buf[w.start+24:], uint32(payload))
	sum := kern.UpdateCRC32C(0, w.Buf[w.start:])
	w.Buf = binary.LittleEndian.AppendUint32(w.Buf, sum)
	return w.Buf
}

// FixChecksum rewrites the checksum of the size-byte frame at the start of
// b, after its scales were edited in place.
func FixChecksum(b []byte, size int) {
	binary.LittleEndian.PutUint32(b[size-TrailerSize:], kern.UpdateCRC32C(0, b[:size-TrailerSize]))
}
