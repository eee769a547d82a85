//go:build amd64 && !purego

#include "textflag.h"

// As in kern_amd64.s: n is a positive multiple of 8.

#define BCAST(c, y, x) MOVL $c, AX; VMOVD AX, x; VPBROADCASTD x, y

// func addSumSqMaxAbsAVX2(r, x *float32, n int) (ss float32, maxAbs uint32)
// sumSqMaxAbsAVX2 over r[i] = x[i] + r[i], storing the sums.
TEXT ·addSumSqMaxAbsAVX2(SB), NOSPLIT, $0-32
	MOVQ r+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y6, Y6, Y6
	BCAST(0x7fffffff, Y3, X3)
loop16:
	CMPQ CX, $16
	JL tail8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VADDPS (DI), Y4, Y4
	VADDPS 32(DI), Y5, Y5
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	VFMADD231PS Y4, Y4, Y0
	VFMADD231PS Y5, Y5, Y1
	VPAND Y3, Y4, Y4
	VPAND Y3, Y5, Y5
	VPMAXUD Y4, Y2, Y2
	VPMAXUD Y5, Y6, Y6
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop16
tail8:
	CMPQ CX, $8
	JL done
	VMOVUPS (SI), Y4
	VADDPS (DI), Y4, Y4
	VMOVUPS Y4, (DI)
	VFMADD231PS Y4, Y4, Y0
	VPAND Y3, Y4, Y4
	VPMAXUD Y4, Y2, Y2
done:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	MOVSS X0, ss+24(FP)
	VPMAXUD Y6, Y2, Y2
	VEXTRACTI128 $1, Y2, X1
	VPMAXUD X1, X2, X2
	VPSHUFD $0x4e, X2, X1
	VPMAXUD X1, X2, X2
	VPSHUFD $0xb1, X2, X1
	VPMAXUD X1, X2, X2
	VMOVD X2, AX
	MOVL AX, maxAbs+28(FP)
	VZEROUPPER
	RET
