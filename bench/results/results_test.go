package results

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestReadPerfAndTable(t *testing.T) {
	in := strings.Join([]string{
		"# nccl-tests style header",
		`[0] {"rate":"100mbit","hosts":4,"codec":"hevc","size":67108864,"time_us":2000000,"busbw":0.05,"bpv":1.41,"nmse":0.04,"wrong":0}`,
		`[0] {"rate":"100mbit","hosts":4,"codec":"raw","size":67108864,"time_us":8000000,"bpv":32}`,
		`{"rate":"1gbit","hosts":4,"codec":"raw","size":67108864,"time_us":800000,"bpv":32}`,
		`{"rate":"1gbit","hosts":4,"codec":"hevc","size":67108864,"time_us":1600000,"bpv":1.4}`,
		`{"summary":"avg busbw"}`,
	}, "\n")
	recs, err := ReadPerf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("got %d records, want 4", len(recs))
	}
	rows := Table(recs, []string{"raw", "fp16", "h264", "hevc"})
	want := []struct {
		rate, codec string
		speedup     float64
	}{{"1gbit", "raw", 1}, {"1gbit", "hevc", 0.5}, {"100mbit", "raw", 1}, {"100mbit", "hevc", 4}}
	for i, w := range want {
		r := rows[i]
		if r.Rate != w.rate || r.Codec != w.codec || math.Abs(r.Speedup-w.speedup) > 1e-9 {
			t.Errorf("row %d = %s %s %.3f, want %s %s %.3f", i, r.Rate, r.Codec, r.Speedup, w.rate, w.codec, w.speedup)
		}
	}
	// busbw given is kept; missing busbw is computed: 64 MiB / 0.8 s * 1.5.
	if got, want := rows[0].BusBW, 67108864/0.8/1e9*1.5; math.Abs(got-want) > 1e-9 {
		t.Errorf("computed busbw %g, want %g", got, want)
	}
	if rows[3].BusBW != 0.05 || rows[3].NMSE != 0.04 {
		t.Errorf("hevc 100mbit row lost fields: %+v", rows[3])
	}
	var b strings.Builder
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"100mbit", "64M", "4.00x", "0.50x", "1.41", "4.00e-02"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

func TestReadPerfErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ErrNoRecords.Error()},
		{`{"codec":"raw","size":10}`, "time_us"},
		{`{"codec":"raw","size":10,"time_us":1,"rate":"fast"}`, "bad rate"},
		{"x\n{\"size\": 1,", "line 2"},
	} {
		_, err := ReadPerf(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadPerf(%q) = %v, want error containing %q", c.in, err, c.want)
		}
	}
	if _, err := ReadPerf(strings.NewReader("")); !errors.Is(err, ErrNoRecords) {
		t.Errorf("empty input: %v, want ErrNoRecords", err)
	}
}

func TestParseRateAndSize(t *testing.T) {
	for s, want := range map[string]float64{"1gbit": 1e9, "100mbit": 1e8, "500kbit": 5e5, "12mbps": 96e6, "2000": 2000} {
		if got, err := ParseRate(s); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %g, %v; want %g", s, got, err, want)
		}
	}
	for _, s := range []string{"", "fast", "-1mbit", "0gbit"} {
		if _, err := ParseRate(s); err == nil {
			t.Errorf("ParseRate(%q) accepted", s)
		}
	}
	for s, want := range map[string]int64{"64M": 64 << 20, "1K": 1024, "3": 3, "2G": 2 << 30} {
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", s, got, err)
		}
		if FormatSize(got) != s {
			t.Errorf("FormatSize(%d) = %q, want %q", got, FormatSize(got), s)
		}
	}
}

func TestReadRD(t *testing.T) {
	in := `{"file":"w1.npy","shape":[256,784],"codec":"hevc","target_bpv":1.4,"bpv":1.38,"nmse":0.05,"snr_db":13,"encode_mvals":20,"decode_mvals":80}
{"file":"w1.npy","codec":"h264","bpv":1.5}`
	_, err := ReadRD(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "nmse") {
		t.Fatalf("record without nmse: %v", err)
	}
	recs, err := ReadRD(strings.NewReader(strings.SplitN(in, "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[0]; r.Shape != "256x784" || r.BPV != 1.38 || r.EncodeMvals != 20 {
		t.Errorf("got %+v", r)
	}
}

func TestCompare(t *testing.T) {
	in := strings.Join([]string{
		`{"size":1048576,"time_us":8000,"codec":"gloo","rate":"loopback","hosts":4,"sweep":1,"bpv":32,"wrong":0}`,
		`{"size":1048576,"time_us":10000,"codec":"gloo","rate":"loopback","hosts":4,"sweep":2,"bpv":32,"wrong":0}`,
		`{"size":1048576,"time_us":9000,"codec":"gloo","rate":"loopback","hosts":4,"sweep":3,"bpv":32,"wrong":0}`,
		`[0] {"size":1048576,"time_us":3000,"codec":"raw","rate":"loopback","hosts":4,"sweep":2,"bpv":32,"wrong":0,"alloc_bytes":4096}`,
		`{"size":1048576,"time_us":6000,"codec":"raw","rate":"loopback","hosts":4,"sweep":1,"bpv":32,"wrong":1,"alloc_bytes":2048}`,
		`{"size":1048576,"time_us":4500,"codec":"raw","rate":"loopback","hosts":4,"sweep":3,"bpv":32,"wrong":0,"alloc_bytes":1024}`,
		`{"size":65536,"time_us":500,"codec":"h264","rate":"1gbit","hosts":4,"sweep":1,"bpv":1.4,"wrong":0}`,
	}, "\n")
	recs, err := ReadPerf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	rows := Compare(recs, []string{"raw", "h264"})
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3: %+v", len(rows), rows)
	}
	gloo, raw, h264 := rows[0], rows[1], rows[2]
	if gloo.Codec != "gloo" || raw.Codec != "raw" || h264.Codec != "h264" {
		t.Fatalf("order %s %s %s, want loopback gloo, raw, then 1gbit h264", gloo.Codec, raw.Codec, h264.Codec)
	}
	if gloo.Median != 9000 || raw.Median != 4500 {
		t.Errorf("medians %v %v, want 9000 4500", gloo.Median, raw.Median)
	}
	if fmt.Sprint(raw.Times) != "[6000 3000 4500]" {
		t.Errorf("raw times %v, want sweep order [6000 3000 4500]", raw.Times)
	}
	if raw.Spread != 2 || raw.VsBase != 0.5 || raw.Base != "gloo" || raw.Wrong != 1 || raw.Alloc != 4096 {
		t.Errorf("raw row %+v: want spread 2, vs gloo 0.5, wrong 1, alloc 4096", raw)
	}
	if !math.IsNaN(h264.VsBase) || h264.Alloc != -1 {
		t.Errorf("h264 row without a baseline: %+v", h264)
	}
	var b strings.Builder
	if err := WriteCompare(&b, rows); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0.50x", "2.00x", "4.0K", "6.0 3.0 4.5", "loopback", "1gbit"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
