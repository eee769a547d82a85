package video

import (
	"bytes"

	"github.com/vccl/vccl/gradcodec"
)

// appendWithoutSEI appends the Annex-B access unit au to dst, leaving out
// SEI NAL units (encoder banners and hints a decoder does not need).
func appendWithoutSEI(dst, au []byte, id uint8) []byte {
	start := []byte{0, 0, 1}
	i := bytes.Index(au, start)
	if i < 0 {
		return append(dst, au...)
	}
	for i >= 0 {
		j := bytes.Index(au[i+3:], start)
		end := len(au)
		if j >= 0 {
			end = i + 3 + j
			if end > 0 && au[end-1] == 0 { // 4-byte start code of the next NAL
				end--
			}
		}
		nal := au[i:end]
		sei := false
		if len(nal) > 3 {
			hdr := nal[3]
			if id == gradcodec.IDH264 {
				sei = hdr&0x1f == 6
			} else {
				t := (hdr >> 1) & 0x3f
				sei = t == 39 || t == 40
			}
		}
		if !sei {
			dst = append(dst, 0)
			dst = append(dst, nal...)
		}
		if j < 0 {
			break
		}
		i = i + 3 + j
	}
	return dst
}
