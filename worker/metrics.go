package worker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/vccl/vccl/ring"
)

// Metrics are the counters of one worker. The link counters are kept by the
// worker; the collective counters are added by the collective layer through
// Observe (or by adding to the fields directly). The zero value is ready to
// use; all fields are safe for concurrent use.
type Metrics struct {
	rank, size int

	LinkSentBytes  atomic.Int64 // bytes of frames written to ring links (a payload sent through shared memory counts whole)
	LinkRecvBytes  atomic.Int64 // bytes of frames read from ring links (likewise)
	LinkSentFrames atomic.Int64 // frames written
	LinkRecvFrames atomic.Int64 // frames read
	LinkShmFrames  atomic.Int64 // frames sent whose payload went through shared memory
	LinksRefused   atomic.Int64 // link upgrade requests refused (bad or missing secret, wrong rank)
	PeersLost      atomic.Int64 // 1 once a rank of the job is lost

	Collectives      atomic.Int64 // collectives finished (with or without error)
	CollectiveErrors atomic.Int64 // collectives that returned an error
	Values           atomic.Int64 // values reduced
	WireBytes        atomic.Int64 // payload bytes sent by collectives
	RawBytes         atomic.Int64 // what fp32 would have sent over the same hops
	EncodeNanos      atomic.Int64 // time in Codec.Encode
	DecodeNanos      atomic.Int64 // time in Codec.Decode
	WaitNanos        atomic.Int64 // time blocked in Link.Send/Recv
	TotalNanos       atomic.Int64 // wall time of collectives
}

// Observe adds one collective's statistics and outcome.
func (m *Metrics) Observe(st ring.Stats, err error) {
	m.Collectives.Add(1)
	if err != nil {
		m.CollectiveErrors.Add(1)
	}
	m.Values.Add(int64(st.Values))
	m.WireBytes.Add(st.WireBytes)
	m.RawBytes.Add(st.RawBytes)
	m.EncodeNanos.Add(int64(st.EncodeTime))
	m.DecodeNanos.Add(int64(st.DecodeTime))
	m.WaitNanos.Add(int64(st.WaitTime))
	m.TotalNanos.Add(int64(st.Total))
}

// WriteTo writes the metrics in the Prometheus text exposition format, each
// sample labelled with the rank.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriter(w)}
	lbl := fmt.Sprintf(`{rank="%d"}`, m.rank)
	sample := func(name, typ, help string, v float64) {
		fmt.Fprintf(cw, "# HELP %s %s\n# TYPE %s %s\n%s%s %g\n", name, help, name, typ, name, lbl, v)
	}
	secs := func(a *atomic.Int64) float64 { return time.Duration(a.Load()).Seconds() }
	n := func(a *atomic.Int64) float64 { return float64(a.Load()) }
	sample("vccl_world_size", "gauge", "Number of ranks in the job.", float64(m.size))
	sample("vccl_link_sent_bytes_total", "counter", "Bytes of frames written to ring links.", n(&m.LinkSentBytes))
	sample("vccl_link_received_bytes_total", "counter", "Bytes of frames read from ring links.", n(&m.LinkRecvBytes))
	sample("vccl_link_sent_frames_total", "counter", "Frames written to ring links.", n(&m.LinkSentFrames))
	sample("vccl_link_received_frames_total", "counter", "Frames read from ring links.", n(&m.LinkRecvFrames))
	sample("vccl_link_shm_frames_total", "counter", "Frames sent whose payload went through shared memory with a same-host peer.", n(&m.LinkShmFrames))
	sample("vccl_links_refused_total", "counter", "Link requests refused (missing or wrong secret, wrong rank).", n(&m.LinksRefused))
	sample("vccl_peers_lost_total", "counter", "Ranks of the job reported lost.", n(&m.PeersLost))
	sample("vccl_collectives_total", "counter", "Collectives finished.", n(&m.Collectives))
	sample("vccl_collective_errors_total", "counter", "Collectives that returned an error.", n(&m.CollectiveErrors))
	sample("vccl_collective_values_total", "counter", "Values reduced.", n(&m.Values))
	sample("vccl_collective_wire_bytes_total", "counter", "Payload bytes sent by collectives.", n(&m.WireBytes))
	sample("vccl_collective_raw_bytes_total", "counter", "Bytes fp32 would have sent over the same hops.", n(&m.RawBytes))
	sample("vccl_collective_encode_seconds_total", "counter", "Time spent encoding.", secs(&m.EncodeNanos))
	sample("vccl_collective_decode_seconds_total", "counter", "Time spent decoding.", secs(&m.DecodeNanos))
	sample("vccl_collective_wait_seconds_total", "counter", "Time blocked on links.", secs(&m.WaitNanos))
	sample("vccl_collective_seconds_total", "counter", "Wall time of collectives.", secs(&m.TotalNanos))
	bpv := ring.BitsPerValue(m.WireBytes.Load(), m.RawBytes.Load())
	sample("vccl_collective_bits_per_value", "gauge", "Achieved bits per value over all collectives.", bpv)
	if err := cw.w.(*bufio.Writer).Flush(); err != nil && cw.err == nil {
		cw.err = err
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	k, err := c.w.Write(p)
	c.n += int64(k)
	c.err = err
	return k, err
}

// serveMetrics starts the HTTP server for /metrics and /healthz.
func (w *Worker) serveMetrics() error {
	ln, err := net.Listen("tcp", w.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("worker: rank %d: metrics listener on %s: %w", w.cfg.Rank, w.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.metrics.WriteTo(rw)
	})
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		started, closing, lost := w.started, w.closing, w.lostErr
		w.mu.Unlock()
		switch {
		case lost != nil:
			http.Error(rw, fmt.Sprintf("rank %d/%d: %v", w.cfg.Rank, w.cfg.WorldSize, lost), http.StatusServiceUnavailable)
		case closing:
			http.Error(rw, fmt.Sprintf("rank %d/%d: closing", w.cfg.Rank, w.cfg.WorldSize), http.StatusServiceUnavailable)
		case !started:
			http.Error(rw, fmt.Sprintf("rank %d/%d: starting", w.cfg.Rank, w.cfg.WorldSize), http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(rw, "ok rank %d/%d\n", w.cfg.Rank, w.cfg.WorldSize)
		}
	})
	w.metricsLn = ln
	w.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.metricsSrv.Serve(ln)
	}()
	return nil
}
