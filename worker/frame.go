package worker

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// Wire format of one ring.Message: one binary websocket message made of a
// 64-byte little-endian header and the payload.
//
//	 0  magic "VCCL"
//	 4  version (1), 3 zero bytes
//	 8  job id (8 bytes, derived from the secret)
//	16  seq     uint64: per direction of a connection, from 0, no gaps
//	24  op      uint64
//	32  kind    uint8, 3 zero bytes
//	36  hop     uint32
//	40  chunk   uint32
//	44  sub     uint32
//	48  total   uint64
//	56  payload length uint32
//	60  CRC-32C of bytes 0..59 and the payload
//
// The job id rejects frames of another job, the sequence number replayed,
// dropped or reordered frames, the checksum corrupted ones.
const (
	frameHeaderSize = 64
	frameVersion    = 1
	// MaxPayload is the largest Message.Payload a link carries (1 GiB).
	MaxPayload = 1 << 30
)

var (
	frameMagic = [4]byte{'V', 'C', 'C', 'L'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// appendFrame appends the frame of m to dst with seq and checksum left zero;
// sealFrame fills them in.
func appendFrame(dst []byte, job [8]byte, m ring.Message) []byte {
	var h [frameHeaderSize]byte
	copy(h[0:4], frameMagic[:])
	h[4] = frameVersion
	copy(h[8:16], job[:])
	binary.LittleEndian.PutUint64(h[24:], m.Op)
	h[32] = byte(m.Kind)
	binary.LittleEndian.PutUint32(h[36:], m.Hop)
	binary.LittleEndian.PutUint32(h[40:], m.Chunk)
	binary.LittleEndian.PutUint32(h[44:], m.Sub)
	binary.LittleEndian.PutUint64(h[48:], m.Total)
	binary.LittleEndian.PutUint32(h[56:], uint32(len(m.Payload)))
	dst = append(dst, h[:]...)
	return append(dst, m.Payload...)
}

// sealFrame writes seq and the checksum into a frame made by appendFrame.
func sealFrame(f []byte, seq uint64) {
	binary.LittleEndian.PutUint64(f[16:], seq)
	binary.LittleEndian.PutUint32(f[60:], frameCRC(f[:frameHeaderSize], f[frameHeaderSize:]))
}

// frameCRC is the CRC-32C of the header (without its checksum field) and
// the payload.
func frameCRC(h, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:60])
	return crc32.Update(c, castagnoli, payload)
}

// frameHeader is a parsed header.
type frameHeader struct {
	seq     uint64
	msg     ring.Message // without Payload
	length  int
	wantCRC uint32
}

// parseHeader checks the fixed fields of a header. Errors wrap
// gradcodec.ErrBadFrame.
func parseHeader(h []byte, job [8]byte) (frameHeader, error) {
	var fh frameHeader
	if len(h) < frameHeaderSize {
		return fh, fmt.Errorf("%w: link frame of %d bytes is shorter than its %d-byte header (truncated)", gradcodec.ErrBadFrame, len(h), frameHeaderSize)
	}
	if [4]byte(h[0:4]) != frameMagic {
		return fh, fmt.Errorf("%w: link frame magic %q is not %q", gradcodec.ErrBadFrame, h[0:4], frameMagic[:])
	}
	if h[4] != frameVersion {
		return fh, fmt.Errorf("%w: link frame version %d, this build speaks %d", gradcodec.ErrBadFrame, h[4], frameVersion)
	}
	if [8]byte(h[8:16]) != job {
		return fh, fmt.Errorf("%w: link frame of job %x, this is job %x", gradcodec.ErrBadFrame, h[8:16], job[:])
	}
	fh.seq = binary.LittleEndian.Uint64(h[16:])
	fh.msg = ring.Message{
		Op:    binary.LittleEndian.Uint64(h[24:]),
		Kind:  ring.Kind(h[32]),
		Hop:   binary.LittleEndian.Uint32(h[36:]),
		Chunk: binary.LittleEndian.Uint32(h[40:]),
		Sub:   binary.LittleEndian.Uint32(h[44:]),
		Total: binary.LittleEndian.Uint64(h[48:]),
	}
	if fh.msg.Kind == 0 {
		return fh, fmt.Errorf("%w: link frame of kind 0", gradcodec.ErrBadFrame)
	}
	n := binary.LittleEndian.Uint32(h[56:])
	if n > MaxPayload {
		return fh, fmt.Errorf("%w: link frame payload of %d bytes exceeds %d", gradcodec.ErrBadFrame, n, MaxPayload)
	}
	fh.length = int(n)
	fh.wantCRC = binary.LittleEndian.Uint32(h[60:])
	return fh, nil
}
