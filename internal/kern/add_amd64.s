//go:build amd64 && !purego

#include "textflag.h"

// func addFiniteAVX2(dst, src *float32, n int) bool
//
// dst += src, 32 values per step while they last, then 8; n is a positive
// multiple of 8. A sum is not finite when its exponent bits are all ones:
// VPCMPEQD of (sum AND 0x7f800000) with 0x7f800000 marks it, and two OR
// accumulators collect the marks.
TEXT ·addFiniteAVX2(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7f800000, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	VPXOR Y15, Y15, Y15
	VPXOR Y13, Y13, Y13
loop32:
	CMPQ CX, $32
	JL loop8
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VADDPS (SI), Y0, Y0
	VADDPS 32(SI), Y1, Y1
	VADDPS 64(SI), Y2, Y2
	VADDPS 96(SI), Y3, Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VPAND Y14, Y0, Y4
	VPAND Y14, Y1, Y5
	VPAND Y14, Y2, Y6
	VPAND Y14, Y3, Y7
	VPCMPEQD Y14, Y4, Y4
	VPCMPEQD Y14, Y5, Y5
	VPCMPEQD Y14, Y6, Y6
	VPCMPEQD Y14, Y7, Y7
	VPOR Y4, Y15, Y15
	VPOR Y5, Y13, Y13
	VPOR Y6, Y15, Y15
	VPOR Y7, Y13, Y13
	ADDQ $128, DI
	ADDQ $128, SI
	SUBQ $32, CX
	JMP loop32
loop8:
	CMPQ CX, $8
	JL done
	VMOVUPS (DI), Y0
	VADDPS (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	VPAND Y14, Y0, Y4
	VPCMPEQD Y14, Y4, Y4
	VPOR Y4, Y15, Y15
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP loop8
done:
	VPOR Y13, Y15, Y15
	VPTEST Y15, Y15
	SETEQ ret+24(FP)
	VZEROUPPER
	RET
