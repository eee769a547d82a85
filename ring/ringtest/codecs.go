package ringtest

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"sync/atomic"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// RawCodec is an exact ring.Codec: little-endian float32 values with a
// CRC-32 trailer. It rejects non-finite input (gradcodec.ErrNonFinite) and
// damaged frames (gradcodec.ErrBadFrame). It keeps no state; Encodes counts
// the calls.
type RawCodec struct {
	Encodes atomic.Int64
}

// QuantCodec is a deterministic lossy ring.Codec: blocks of QuantBlock
// values quantized to int8 with one float32 scale each (about 8.1 bits per
// value), with a CRC-32 trailer. Its normalized MSE per encode is about
// 1e-4 for Gaussian data.
type QuantCodec struct {
	Encodes atomic.Int64
}

// QuantBlock is the number of values sharing one scale in QuantCodec.
const QuantBlock = 256

var (
	_ ring.Codec = (*RawCodec)(nil)
	_ ring.Codec = (*QuantCodec)(nil)
)

const (
	magicRaw   = 'R'
	magicQuant = 'Q'
)

func checkArgs(src []float32, pieces []gradcodec.Shape, recon []float32) error {
	sum := 0
	for _, p := range pieces {
		if p.Rows <= 0 || p.Cols <= 0 {
			return fmt.Errorf("ringtest: empty or negative piece %dx%d", p.Rows, p.Cols)
		}
		sum += p.Len()
	}
	if sum != len(src) || (recon != nil && len(recon) != len(src)) {
		return fmt.Errorf("ringtest: pieces cover %d values, src has %d, recon %d: %w",
			sum, len(src), len(recon), gradcodec.ErrShapeMismatch)
	}
	return gradcodec.CheckFinite("ringtest", src)
}

// openFrame checks magic, CRC and length and returns the body after the
// 5-byte header.
func openFrame(wire []byte, magic byte, n int) ([]byte, error) {
	if len(wire) < 9 {
		return nil, fmt.Errorf("ringtest: frame of %d bytes is too short: %w", len(wire), gradcodec.ErrBadFrame)
	}
	body, sum := wire[:len(wire)-4], binary.LittleEndian.Uint32(wire[len(wire)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, fmt.Errorf("ringtest: frame checksum mismatch: %w", gradcodec.ErrBadFrame)
	}
	if body[0] != magic {
		return nil, fmt.Errorf("ringtest: frame magic %q, want %q: %w", body[0], magic, gradcodec.ErrBadFrame)
	}
	if got := int(binary.LittleEndian.Uint32(body[1:5])); got != n {
		return nil, fmt.Errorf("ringtest: frame holds %d values, want %d: %w", got, n, gradcodec.ErrShapeMismatch)
	}
	return body[5:], nil
}

func seal(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// Encode implements ring.Codec.
func (c *RawCodec) Encode(stream string, src []float32, pieces []gradcodec.Shape, recon []float32) ([]byte, error) {
	if err := checkArgs(src, pieces, recon); err != nil {
		return nil, err
	}
	c.Encodes.Add(1)
	b := make([]byte, 5, 9+4*len(src))
	b[0] = magicRaw
	binary.LittleEndian.PutUint32(b[1:], uint32(len(src)))
	b = gradcodec.AppendFloat32s(b, src)
	copy(recon, src) // recon may be nil
	return seal(b), nil
}

// Decode implements ring.Codec.
func (c *RawCodec) Decode(dst []float32, wire []byte) error {
	body, err := openFrame(wire, magicRaw, len(dst))
	if err != nil {
		return err
	}
	if len(body) != 4*len(dst) {
		return fmt.Errorf("ringtest: raw body of %d bytes for %d values: %w", len(body), len(dst), gradcodec.ErrBadFrame)
	}
	gradcodec.Float32sFromBytes(dst, body)
	return nil
}

// Encode implements ring.Codec.
func (c *QuantCodec) Encode(stream string, src []float32, pieces []gradcodec.Shape, recon []float32) ([]byte, error) {
	if err := checkArgs(src, pieces, recon); err != nil {
		return nil, err
	}
	c.Encodes.Add(1)
	nb := (len(src) + QuantBlock - 1) / QuantBlock
	b := make([]byte, 5, 9+4*nb+len(src))
	b[0] = magicQuant
	binary.LittleEndian.PutUint32(b[1:], uint32(len(src)))
	for i := 0; i < len(src); i += QuantBlock {
		blk := src[i:min(i+QuantBlock, len(src))]
		var m float32
		for _, v := range blk {
			m = max(m, float32(math.Abs(float64(v))))
		}
		scale := m / 127
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(scale))
		for k, v := range blk {
			var q int8
			if scale > 0 {
				q = int8(math.Round(float64(v / scale)))
			}
			b = append(b, byte(q))
			if recon != nil {
				recon[i+k] = float32(q) * scale
			}
		}
	}
	return seal(b), nil
}

// Decode implements ring.Codec.
func (c *QuantCodec) Decode(dst []float32, wire []byte) error {
	body, err := openFrame(wire, magicQuant, len(dst))
	if err != nil {
		return err
	}
	nb := (len(dst) + QuantBlock - 1) / QuantBlock
	if len(body) != 4*nb+len(dst) {
		return fmt.Errorf("ringtest: quant body of %d bytes for %d values: %w", len(body), len(dst), gradcodec.ErrBadFrame)
	}
	for i := 0; i < len(dst); i += QuantBlock {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(body))
		body = body[4:]
		end := min(i+QuantBlock, len(dst))
		for k := i; k < end; k++ {
			dst[k] = float32(int8(body[k-i])) * scale
		}
		body = body[end-i:]
	}
	return nil
}
