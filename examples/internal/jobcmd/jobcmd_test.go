package jobcmd

import (
	"math"
	"testing"
)

// TestSumReports adds float64 words as floats and the others as integers,
// keeping the first report's hash.
func TestSumReports(t *testing.T) {
	f := math.Float64bits
	reps := []Report{
		{Hash: [32]byte{7}, Words: []uint64{f(0.25), 3, f(-1.5)}},
		{Hash: [32]byte{7}, Words: []uint64{f(0.5), 4, f(4)}},
	}
	got := SumReports(reps, 0, 2)
	if got.Hash != reps[0].Hash {
		t.Errorf("hash %x, want the first report's", got.Hash[:2])
	}
	if a, b, c := math.Float64frombits(got.Words[0]), got.Words[1], math.Float64frombits(got.Words[2]); a != 0.75 || b != 7 || c != 2.5 {
		t.Errorf("sum %v %v %v, want 0.75 7 2.5", a, b, c)
	}
	if got := SumReports(nil); got.Words != nil {
		t.Errorf("sum of no reports %+v, want empty", got)
	}
}

// TestBitsPerValue checks the 32·wire/raw figure and its zero case.
func TestBitsPerValue(t *testing.T) {
	if got := BitsPerValue(1, 32); got != 1 {
		t.Errorf("BitsPerValue(1, 32) = %v, want 1", got)
	}
	if got := BitsPerValue(5, 0); got != 0 {
		t.Errorf("BitsPerValue(5, 0) = %v, want 0", got)
	}
}
