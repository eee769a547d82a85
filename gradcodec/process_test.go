package gradcodec_test

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
)

const helperEnv = "GRADCODEC_HELPER_DIR"

// TestDecodeInAnotherProcess checks that the wire format is the whole
// contract: frames of every codec, written by this process, are decoded by
// a fresh Decoder in a child process (this test binary re-executed) to
// bit-identical values.
func TestDecodeInAnotherProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("running as the helper")
	}
	dir := t.TempDir()
	var wire []byte
	var want []float32
	dec := codectest.MustDecoder(t)
	for _, codec := range gradcodec.Codecs() {
		enc := codectest.MustEncoder(t, codec, 1.4)
		for i, sh := range []gradcodec.Shape{{96, 200}, {96, 200}, {1, 3000}, {700, 10}} {
			x := codectest.GradientLike(uint64(50+i), sh.Rows, sh.Cols)
			fr, err := enc.Encode(nil, x, sh)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, sh.Len())
			if err := dec.Decode(y, fr); err != nil {
				t.Fatal(err)
			}
			wire = append(wire, fr...)
			want = append(want, y...)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "frames"), wire, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessDecode$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "values"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4*len(want) {
		t.Fatalf("helper decoded %d values, want %d", len(got)/4, len(want))
	}
	for i, v := range want {
		if g := binary.LittleEndian.Uint32(got[4*i:]); g != math.Float32bits(v) {
			t.Fatalf("value %d: other process decoded %v, this one %v", i, math.Float32frombits(g), v)
		}
	}
}

// TestHelperProcessDecode is the child of TestDecodeInAnotherProcess.
func TestHelperProcessDecode(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	wire, err := os.ReadFile(filepath.Join(dir, "frames"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := gradcodec.NewDecoder("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []byte
	for len(wire) > 0 {
		h, err := gradcodec.ParseHeader(wire)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, h.Shape.Len())
		if err := d.Decode(y, wire[:h.Size]); err != nil {
			t.Fatal(err)
		}
		for _, v := range y {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
		wire = wire[h.Size:]
	}
	if err := os.WriteFile(filepath.Join(dir, "values"), out, 0o600); err != nil {
		t.Fatal(err)
	}
}
