package results

import (
	"errors"
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
