//go:build amd64 && !purego

#include "textflag.h"

// As in kern_amd64.s: n is a positive multiple of 8; here the float32
// destinations are also 32-byte aligned.

#define BCAST(c, y, x) MOVL $c, AX; VMOVD AX, x; VPBROADCASTD x, y

// func dequantResidualNTAVX2(recon, res *float32, q *byte, x *float32, n int, m float32)
TEXT ·dequantResidualNTAVX2(SB), NOSPLIT, $0-44
	MOVQ recon+0(FP), DI
	MOVQ res+8(FP), DX
	MOVQ q+16(FP), SI
	MOVQ x+24(FP), BX
	MOVQ n+32(FP), CX
	VBROADCASTSS m+40(FP), Y6
	BCAST(128, Y7, X7)
loop:
	VPMOVZXBD (SI), Y0
	VPSUBD Y7, Y0, Y0
	VCVTDQ2PS Y0, Y0
	VMULPS Y6, Y0, Y0
	VMOVNTPS Y0, (DI)
	VMOVUPS (BX), Y1
	VSUBPS Y0, Y1, Y1
	VMOVNTPS Y1, (DX)
	ADDQ $8, SI
	ADDQ $32, DI
	ADDQ $32, DX
	ADDQ $32, BX
	SUBQ $8, CX
	JNZ loop
	SFENCE
	VZEROUPPER
	RET

// func dequantU8NTAVX2(dst *float32, q *byte, n int, m float32)
TEXT ·dequantU8NTAVX2(SB), NOSPLIT, $0-28
	MOVQ dst+0(FP), DI
	MOVQ q+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS m+24(FP), Y6
	BCAST(128, Y7, X7)
loop:
	VPMOVZXBD (SI), Y0
	VPSUBD Y7, Y0, Y0
	VCVTDQ2PS Y0, Y0
	VMULPS Y6, Y0, Y0
	VMOVNTPS Y0, (DI)
	ADDQ $8, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ loop
	SFENCE
	VZEROUPPER
	RET

// func addTo2NTAVX2(dst, a, b *float32, n int)
TEXT ·addTo2NTAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
loop:
	VMOVUPS (SI), Y0
	VADDPS (DX), Y0, Y0
	VMOVNTPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ loop
	SFENCE
	VZEROUPPER
	RET
