//go:build amd64 && !purego

#include "textflag.h"

// castagnoliCLMUL is the standard library's ieeeCLMUL (hash/crc32,
// crc32_amd64.s, BSD licence; Intel's "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ Instruction") with the constants of the
// Castagnoli polynomial 0x1EDC6F41, bit-reflected: k = reflect32(x^e mod P)
// << 1 for e = 4*128+32, 4*128-32 (r2r1), 128+32, 128-32 (r4r3), 64 (r5),
// P' = reflect33(P) and mu' = reflect33(x^64 div P) (rupoly). The same
// formulas give the standard library's IEEE constants. The AVX-512 path
// adds four independent accumulators folded by 2048 bits (e = 2048+32,
// 2048-32: c2048), so the multiplies of one step do not wait on each
// other.

// func castagnoliCLMUL(crc uint32, p []byte, avx512 bool) uint32
TEXT ·castagnoliCLMUL(SB), NOSPLIT, $0-44
	MOVL crc+0(FP), X0
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	CMPB avx512+32(FP), $1
	JNE  useSSE

	// AVX-512: four 512-bit accumulators (independent chains of
	// VPCLMULQDQ) folded by 2048 bits, 256 bytes per step; then folded
	// into one and on by 512 bits, 64 bytes per step.
	VPXORQ    Z10, Z10, Z10
	VMOVAPS   X0, X10
	VMOVDQU64 (SI), Z1
	VPXORQ    Z10, Z1, Z1
	ADDQ      $64, SI
	SUBQ      $64, CX
	CMPQ      CX, $448
	JL        fold1avx512

	VMOVDQU64 (SI), Z2
	VMOVDQU64 64(SI), Z3
	VMOVDQU64 128(SI), Z4
	ADDQ      $192, SI
	SUBQ      $192, CX
	VMOVDQU64 c2048<>+0(SB), Z0

loop256avx512:
	VMOVDQU64  (SI), Z11
	VMOVDQU64  64(SI), Z12
	VMOVDQU64  128(SI), Z13
	VMOVDQU64  192(SI), Z14
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPCLMULQDQ $0x11, Z0, Z2, Z6
	VPCLMULQDQ $0, Z0, Z2, Z2
	VPCLMULQDQ $0x11, Z0, Z3, Z7
	VPCLMULQDQ $0, Z0, Z3, Z3
	VPCLMULQDQ $0x11, Z0, Z4, Z8
	VPCLMULQDQ $0, Z0, Z4, Z4
	VPTERNLOGD $0x96, Z11, Z5, Z1
	VPTERNLOGD $0x96, Z12, Z6, Z2
	VPTERNLOGD $0x96, Z13, Z7, Z3
	VPTERNLOGD $0x96, Z14, Z8, Z4
	ADDQ       $256, SI
	SUBQ       $256, CX
	CMPQ       CX, $256
	JGE        loop256avx512

	// Fold the four accumulators into Z1 (by 512 bits each time).
	VMOVDQU64  c2c1<>+0(SB), Z0
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z2, Z5, Z1
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z3, Z5, Z1
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z4, Z5, Z1
	JMP        tail64avx512

fold1avx512:
	VMOVDQU64 c2c1<>+0(SB), Z0

tail64avx512:
	CMPQ CX, $64
	JL   split512

loop64avx512:
	VMOVDQU64  (SI), Z11
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1
	ADDQ       $64, SI
	SUBQ       $64, CX
	CMPQ       CX, $64
	JGE        loop64avx512

split512:
	VEXTRACTF32X4 $1, Z1, X2
	VEXTRACTF32X4 $2, Z1, X3
	VEXTRACTF32X4 $3, Z1, X4
	VZEROUPPER
	JMP remain64

useSSE:
	MOVOU (SI), X1
	MOVOU 16(SI), X2
	MOVOU 32(SI), X3
	MOVOU 48(SI), X4
	PXOR  X0, X1
	ADDQ  $64, SI
	SUBQ  $64, CX
	CMPQ  CX, $64
	JB    remain64

	MOVOU c2c1<>+0(SB), X0

loop64:
	MOVOA X1, X5
	MOVOA X2, X6
	MOVOA X3, X7
	MOVOA X4, X8

	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0, X0, X2
	PCLMULQDQ $0, X0, X3
	PCLMULQDQ $0, X0, X4

	MOVOU (SI), X11
	MOVOU 16(SI), X12
	MOVOU 32(SI), X13
	MOVOU 48(SI), X14

	PCLMULQDQ $0x11, X0, X5
	PCLMULQDQ $0x11, X0, X6
	PCLMULQDQ $0x11, X0, X7
	PCLMULQDQ $0x11, X0, X8

	PXOR X5, X1
	PXOR X6, X2
	PXOR X7, X3
	PXOR X8, X4

	PXOR X11, X1
	PXOR X12, X2
	PXOR X13, X3
	PXOR X14, X4

	ADDQ $64, SI
	SUBQ $64, CX
	CMPQ CX, $64
	JGE  loop64

	// Fold the four lanes into X1.
remain64:
	MOVOU c4c3<>+0(SB), X0

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X2, X1

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X3, X1

	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X4, X1

	CMPQ CX, $16
	JB   finish

remain16:
	MOVOU     (SI), X10
	MOVOA     X1, X5
	PCLMULQDQ $0, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X10, X1
	SUBQ      $16, CX
	ADDQ      $16, SI
	CMPQ      CX, $16
	JGE       remain16

finish:
	// 128 bits to 64 (c4), to 32 (c5), then Barrett reduction.
	PCMPEQB   X3, X3
	PCLMULQDQ $1, X1, X0
	PSRLDQ    $8, X1
	PXOR      X0, X1

	MOVOA X1, X2
	MOVQ  c5<>+0(SB), X0

	PSRLQ $32, X3

	PSRLDQ    $4, X2
	PAND      X3, X1
	PCLMULQDQ $0, X0, X1
	PXOR      X2, X1

	MOVOU cpoly<>+0(SB), X0

	MOVOA     X1, X2
	PAND      X3, X1
	PCLMULQDQ $0x10, X0, X1
	PAND      X3, X1
	PCLMULQDQ $0, X0, X1
	PXOR      X2, X1

	PEXTRD $1, X1, AX
	MOVL   AX, ret+40(FP)
	RET

DATA c2c1<>+0(SB)/8, $0x0740eef02
DATA c2c1<>+8(SB)/8, $0x09e4addf8
DATA c2c1<>+16(SB)/8, $0x0740eef02
DATA c2c1<>+24(SB)/8, $0x09e4addf8
DATA c2c1<>+32(SB)/8, $0x0740eef02
DATA c2c1<>+40(SB)/8, $0x09e4addf8
DATA c2c1<>+48(SB)/8, $0x0740eef02
DATA c2c1<>+56(SB)/8, $0x09e4addf8
GLOBL c2c1<>(SB), RODATA, $64

DATA c2048<>+0(SB)/8, $0x0dcb17aa4
DATA c2048<>+8(SB)/8, $0x0b9e02b86
DATA c2048<>+16(SB)/8, $0x0dcb17aa4
DATA c2048<>+24(SB)/8, $0x0b9e02b86
DATA c2048<>+32(SB)/8, $0x0dcb17aa4
DATA c2048<>+40(SB)/8, $0x0b9e02b86
DATA c2048<>+48(SB)/8, $0x0dcb17aa4
DATA c2048<>+56(SB)/8, $0x0b9e02b86
GLOBL c2048<>(SB), RODATA, $64

DATA c4c3<>+0(SB)/8, $0x0f20c0dfe
DATA c4c3<>+8(SB)/8, $0x14cd00bd6
GLOBL c4c3<>(SB), RODATA, $16

DATA cpoly<>+0(SB)/8, $0x105ec76f1
DATA cpoly<>+8(SB)/8, $0x0dea713f1
GLOBL cpoly<>(SB), RODATA, $16

DATA c5<>+0(SB)/8, $0x0dd45aab8
GLOBL c5<>(SB), RODATA, $8
