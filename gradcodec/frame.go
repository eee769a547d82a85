package gradcodec

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Wire format of one frame (all integers little-endian):
//
//	offset size field
//	0      4    magic "VCGC"
//	4      1    version (FormatVersion)
//	5      1    codec id (see codecIDs)
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
//	end-4  4    CRC-32C (Castagnoli) of every byte before it
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

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// codec ids on the wire. Never renumber.
const (
	idRaw  = 1
	idFP16 = 2
	idBF16 = 3
	idInt8 = 4
	idH264 = 5
	idHEVC = 6
)

var codecNames = map[uint8]string{
	idRaw: "raw", idFP16: "fp16", idBF16: "bf16", idInt8: "int8", idH264: "h264", idHEVC: "hevc",
}

var codecIDs = map[string]uint8{
	"raw": idRaw, "fp16": idFP16, "bf16": idBF16, "int8": idInt8, "h264": idH264, "hevc": idHEVC,
}

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

// scaleGroupRows returns how many consecutive tensor rows share one scale:
// one per row when rows hold at least 256 values, else enough rows to make
// about 256 values, so that scales never cost more than 1/16 bit per value.
func scaleGroupRows(s Shape) int {
	if s.Cols >= 256 || s.Cols <= 0 {
		return 1
	}
	return (256 + s.Cols - 1) / s.Cols
}

// scaleCount returns the number of scales of a frame of the given codec.
func scaleCount(id uint8, s Shape) int {
	switch id {
	case idInt8, idH264, idHEVC:
		if s.Rows == 0 {
			return 0
		}
		g := scaleGroupRows(s)
		return (s.Rows + g - 1) / g
	}
	return 0
}

// zeroMapBytes returns the size of the zero-row bitmap of a frame.
func zeroMapBytes(id uint8, s Shape) int {
	if scaleCount(id, s) == 0 || scaleGroupRows(s) == 1 {
		return 0
	}
	return (s.Rows + 7) / 8
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
	name, ok := codecNames[id]
	if !ok {
		return h, fmt.Errorf("%w: unknown codec id %d", ErrBadFrame, id)
	}
	h.Codec = name
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
	h.Scales = scaleCount(id, h.Shape)
	h.ZeroMap = zeroMapBytes(id, h.Shape)
	size := uint64(HeaderSize) + 2*uint64(h.Scales) + uint64(h.ZeroMap) + uint64(h.Payload) + TrailerSize
	if size > uint64(len(b)) {
		return h, fmt.Errorf("%w: frame needs %d bytes, only %d present (truncated)", ErrBadFrame, size, len(b))
	}
	h.Size = int(size)
	n := h.Shape.Len()
	switch id {
	case idRaw:
		if h.Payload != 4*n {
			return h, fmt.Errorf("%w: raw payload of %d bytes for %d values", ErrBadFrame, h.Payload, n)
		}
	case idFP16, idBF16:
		if h.Payload != 2*n {
			return h, fmt.Errorf("%w: %s payload of %d bytes for %d values", ErrBadFrame, name, h.Payload, n)
		}
	case idInt8:
		if h.Payload != n {
			return h, fmt.Errorf("%w: int8 payload of %d bytes for %d values", ErrBadFrame, h.Payload, n)
		}
	case idH264, idHEVC:
		if n > 0 {
			l := planLayout(h.Shape)
			if l.W != h.PicWidth || l.FrameH != h.PicHeight || l.Frames != h.NumFrames {
				return h, fmt.Errorf("%w: picture %dx%d in %d frames does not match shape %dx%d (want %dx%d in %d)",
					ErrBadFrame, h.PicWidth, h.PicHeight, h.NumFrames, rows, cols, l.W, l.FrameH, l.Frames)
			}
		} else if h.Payload != 0 || h.NumFrames != 0 {
			return h, fmt.Errorf("%w: empty tensor with %d payload bytes", ErrBadFrame, h.Payload)
		}
	}
	if id != idH264 && id != idHEVC && (h.PicWidth|h.PicHeight|h.NumFrames|h.QP) != 0 {
		return h, fmt.Errorf("%w: picture fields set for codec %s", ErrBadFrame, name)
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
	if got := crc32.Checksum(body, crcTable); got != want {
		return h, fmt.Errorf("%w: checksum %08x, header says %08x (corrupted)", ErrBadFrame, got, want)
	}
	return h, nil
}

// frameWriter builds one frame appended to a destination slice.
type frameWriter struct {
	buf   []byte
	start int
}

// begin appends the fixed header with a zero payload length and reserves
// room for the scales; it returns the slice of scale bytes to fill.
func (w *frameWriter) begin(dst []byte, id uint8, s Shape, pw, ph, nf, qp int) {
	w.start = len(dst)
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
	w.buf = append(dst, hdr[:]...)
}

// finish writes the payload length (everything appended after the header,
// scales and zero map: pre bytes) and the checksum.
func (w *frameWriter) finish(pre int) []byte {
	payload := len(w.buf) - w.start - HeaderSize - pre
	binary.LittleEndian.PutUint32(w.buf[w.start+24:], uint32(payload))
	sum := crc32.Checksum(w.buf[w.start:], crcTable)
	w.buf = binary.LittleEndian.AppendUint32(w.buf, sum)
	return w.buf
}

// fixChecksumAt rewrites the checksum of the size-byte frame at the start
// of b after its scales were edited.
func fixChecksumAt(b []byte, size int) {
	binary.LittleEndian.PutUint32(b[size-TrailerSize:], crc32.Checksum(b[:size-TrailerSize], crcTable))
}
