package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// slowReader returns its data in pieces of at most n bytes.
type slowReader struct {
	data []byte
	n    int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

func TestCopyLines(t *testing.T) {
	long := strings.Repeat("x", 2*maxLine+100)
	in := "one\n\nthree " + strings.Repeat("y", 100<<10) + "\n" + long + "\nlast without newline"
	var out bytes.Buffer
	o := newOutput(&out, nil)
	if err := o.copyLines(&out, "[7] ", &slowReader{data: []byte(in), n: 1000}); err != nil {
		t.Fatal(err)
	}
	want := "[7] one\n[7] \n[7] three " + strings.Repeat("y", 100<<10) + "\n"
	got := out.String()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("short lines: got %.100q…, want %.100q…", got, want)
	}
	rest := strings.Split(strings.TrimSuffix(got[len(want):], "\n"), "\n")
	// The long line comes in pieces of at most maxLine bytes (plus the
	// bytes of the read that crossed the limit), each prefixed.
	var joined strings.Builder
	for _, piece := range rest[:len(rest)-1] {
		p, ok := strings.CutPrefix(piece, "[7] ")
		if !ok || len(p) > maxLine+64<<10 {
			t.Fatalf("piece of %d bytes, prefix ok %v", len(p), ok)
		}
		joined.WriteString(p)
	}
	if len(rest)-1 != 3 || joined.String() != long {
		t.Errorf("long line: %d pieces, rejoined %d bytes; want 3 pieces, %d bytes", len(rest)-1, joined.Len(), len(long))
	}
	if last := rest[len(rest)-1]; last != "[7] last without newline" {
		t.Errorf("last line %q", last)
	}
}
