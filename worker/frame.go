package worker

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
	"github.com/vccl/vccl/ring"
)

// Wire format of one ring.Message: one binary websocket message made of a
// 72-byte little-endian header and the payload.
//
//	 0  magic "VCCL"
//	 4  version (2)
//	 5  flags: bit 0 set when the payload is in the link's shared memory
//	    (the message then carries, after the header, the payload's 8-byte
//	    stream position instead of the payload; see shm.go); 2 zero bytes
//	 8  job id (8 bytes, derived from the secret)
//	16  seq     uint64: per direction of a connection, from 0, no gaps
//	24  op      uint64
//	32  kind    uint8, 3 zero bytes
//	36  hop     uint32
//	40  chunk   uint32
//	44  sub     uint32
//	48  total   uint64
//	56  payload length uint32
//	60  payload CRC-32C (ring.Message.Sum)
//	64  header CRC-32C of bytes 0..63
//	68  4 zero bytes (the payload starts 8-byte aligned)
//
// The job id rejects frames of another job, the sequence number replayed,
// dropped or reordered frames, the checksums corrupted ones. The header is
// checked on its own before the payload is read, so a damaged length is
// caught before it sizes anything; the payload checksum is the one the
// ring computed where the bytes were produced (ring.Message.Sum), checked
// once on arrival: one integrity check per message end to end.
const (
	frameHeaderSize = 72
	frameVersion    = 2
	// MaxPayload is the largest Message.Payload a link carries (1 GiB).
	MaxPayload = 1 << 30
)

var (
	frameMagic = [4]byte{'V', 'C', 'C', 'L'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Frame flags (header byte 5).
const (
	flagShm = 1 << 0 // the payload is in the link's shared memory
)

// putHeader writes the header of m, with seq, the payload checksum sum and
// flags, into h (frameHeaderSize bytes) and seals it with the header
// checksum.
func putHeader(h []byte, job [8]byte, m ring.Message, seq uint64, sum uint32, flags byte) {
	h = h[:frameHeaderSize]
	clear(h)
	copy(h[0:4], frameMagic[:])
	h[4] = frameVersion
	h[5] = flags
	copy(h[8:16], job[:])
	binary.LittleEndian.PutUint64(h[16:], seq)
	binary.LittleEndian.PutUint64(h[24:], m.Op)
	h[32] = byte(m.Kind)
	binary.LittleEndian.PutUint32(h[36:], m.Hop)
	binary.LittleEndian.PutUint32(h[40:], m.Chunk)
	binary.LittleEndian.PutUint32(h[44:], m.Sub)
	binary.LittleEndian.PutUint64(h[48:], m.Total)
	binary.LittleEndian.PutUint32(h[56:], uint32(len(m.Payload)))
	binary.LittleEndian.PutUint32(h[60:], sum)
	binary.LittleEndian.PutUint32(h[64:], crc32.Checksum(h[:64], castagnoli))
}

// payloadSum returns m.Sum, or computes it when the sender left it 0.
func payloadSum(m ring.Message) uint32 {
	if m.Sum != 0 {
		return m.Sum
	}
	return kern.UpdateCRC32C(0, m.Payload)
}

// appendFrame appends the whole frame of m, sealed with seq, to dst (tests
// forge frames from it; links write the header and the payload in place).
func appendFrame(dst []byte, job [8]byte, m ring.Message, seq uint64) []byte {
	var h [frameHeaderSize]byte
	putHeader(h[:], job, m, seq, payloadSum(m), 0)
	dst = append(dst, h[:]...)
	return append(dst, m.Payload...)
}

// sealFrame rewrites the sequence number and both checksums of a whole
// frame made by appendFrame (after a test changed it).
func sealFrame(f []byte, seq uint64) {
	binary.LittleEndian.PutUint64(f[16:], seq)
	binary.LittleEndian.PutUint32(f[60:], crc32.Checksum(f[frameHeaderSize:], castagnoli))
	binary.LittleEndian.PutUint32(f[64:], crc32.Checksum(f[:64], castagnoli))
}

// frameHeader is a parsed header.
type frameHeader struct {
	seq    uint64
	msg    ring.Message // without Payload; Sum set
	length int
	shm    bool // the payload is in the link's shared memory
}

// parseHeader checks a header on its own: magic, version, job, its
// checksum, kind and the absolute length limit. Errors wrap
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
		return fh, fmt.Errorf("%w: link frame of job %x, this is job %x", gradcodec.ErrBadFrame, h[8:16], job) // job, not job[:]: no escape
	}
	if c, want := crc32.Checksum(h[:64], castagnoli), binary.LittleEndian.Uint32(h[64:]); c != want {
		return fh, fmt.Errorf("%w: link frame header checksum %08x, header says %08x (corrupted)", gradcodec.ErrBadFrame, c, want)
	}
	if h[5]&^flagShm != 0 {
		return fh, fmt.Errorf("%w: link frame flags %#x, this build knows %#x", gradcodec.ErrBadFrame, h[5], flagShm)
	}
	fh.shm = h[5]&flagShm != 0
	fh.seq = binary.LittleEndian.Uint64(h[16:])
	fh.msg = ring.Message{
		Op:    binary.LittleEndian.Uint64(h[24:]),
		Kind:  ring.Kind(h[32]),
		Hop:   binary.LittleEndian.Uint32(h[36:]),
		Chunk: binary.LittleEndian.Uint32(h[40:]),
		Sub:   binary.LittleEndian.Uint32(h[44:]),
		Total: binary.LittleEndian.Uint64(h[48:]),
		Sum:   binary.LittleEndian.Uint32(h[60:]),
	}
	if fh.msg.Kind == 0 {
		return fh, fmt.Errorf("%w: link frame of kind 0", gradcodec.ErrBadFrame)
	}
	n := binary.LittleEndian.Uint32(h[56:])
	if n > MaxPayload {
		return fh, fmt.Errorf("%w: link frame payload of %d bytes exceeds %d", gradcodec.ErrBadFrame, n, MaxPayload)
	}
	fh.length = int(n)
	return fh, nil
}
