package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vccl/vccl/bench/results"
	"os/exec"
)

func TestTagAndTable(t *testing.T) {
	raw := `[0] # nccl-tests header
[0] {"size":67108864,"count":16777216,"time_us":8000000,"busbw":0.0126,"codec":"raw","bpv":32,"wrong":0,"nmse":0,"ranks":4}
[0] done
`
	hevc := `[0] {"size":67108864,"count":16777216,"time_us":2000000,"busbw":0.0503,"codec":"hevc","bpv":1.41,"wrong":0,"nmse":0.04,"ranks":4}
`
	var tagged bytes.Buffer
	for _, in := range []string{raw, hevc} {
		if err := runTag([]string{"-rate", "100mbit", "-hosts", "4"}, strings.NewReader(in), &tagged); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(tagged.String(), `"rate":"100mbit"`); got != 2 {
		t.Fatalf("tagged output has %d rate fields, want 2:\n%s", got, tagged.String())
	}
	var table bytes.Buffer
	if err := runTable(nil, &tagged, &table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"100mbit", "64M", "hevc", "4.00x", "1.41"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	err := runTag([]string{"-rate", "1gbit"}, strings.NewReader("[0] allreduce_perf: rank 2 lost\n"), &bytes.Buffer{})
	if !errors.Is(err, results.ErrNoRecords) {
		t.Errorf("tag of output without records: %v, want ErrNoRecords", err)
	}
}

func TestSinkBlast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // sink listens itself; blast retries until it does
	done := make(chan error, 1)
	ctx := context.Background()
	go func() { done <- runSink(ctx, []string{"-listen", addr, "-count", "1"}) }()
	var out bytes.Buffer
	if err := runBlast(ctx, []string{"-to", addr, "-seconds", "0.2"}, &out); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Mbit/s") {
		t.Errorf("blast printed %q", out.String())
	}
}

// TestTorchBaseline runs bench/torch_allreduce.py (2 local Gloo ranks, two
// small sizes) and reads its -json lines like netring.sh does: the records
// must be allreduce_perf's, exact and identical on both ranks. It skips where
// python3 cannot import torch.
func TestTorchBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts python3 with torch (about 10 s)")
	}
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch.distributed").Run(); err != nil {
		t.Skipf("%s cannot import torch: %v", py, err)
	}
	out, err := exec.Command(py, "../torch_allreduce.py", "--spawn", "2", "--backend", "gloo",
		"-b", "4K", "-e", "16K", "-f", "4", "-w", "1", "-n", "2", "-json").CombinedOutput()
	if err != nil {
		t.Fatalf("torch_allreduce.py: %v\n%s", err, out)
	}
	recs, err := results.ReadPerf(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(recs) != 2 || recs[0].Size != 4096 || recs[1].Size != 16384 {
		t.Fatalf("records %+v, want sizes 4096 and 16384", recs)
	}
	for _, r := range recs {
		if r.Codec != "gloo" || r.Wrong != 0 || !(r.NMSE < 1e-12) || r.TimeUS <= 0 || r.Hosts != 2 || r.BPV != 32 {
			t.Errorf("record %+v: want gloo, #wrong 0, exact, positive time, 2 ranks", r)
		}
	}
}
