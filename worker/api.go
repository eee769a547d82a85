package worker

// Planned API (the contract collective builds on; implemented in worker.go):
//
//   type Config struct {
//       Rank, WorldSize int
//       Join        []string      // memberlist addresses to join (rank 0's, usually); empty: be the seed
//       BindAddr    string        // default "127.0.0.1"
//       BindPort    int           // memberlist port; 0 picks a free one
//       Secret      []byte        // job secret; required when WorldSize > 1
//       JoinTimeout time.Duration // default 60s
//       PeerTimeout time.Duration // default 10s: a lost peer fails every pending and later collective within this
//       MetricsAddr string        // optional HTTP listen address for /metrics (Prometheus text) and /healthz
//       Logger      *log.Logger   // default: stderr with a "[vccl rank N] " prefix
//   }
//   func ConfigFromEnv() (Config, error)              // reads the Env* variables; names a bad one in its error
//   func Start(ctx context.Context, cfg Config) (*Worker, error)
//       // joins memberlist (encrypted with a key derived from Secret), waits
//       // for the whole world, validates ranks (duplicates, gaps, wrong world
//       // size are errors), opens an authenticated websocket to rank+1 and
//       // accepts one from rank-1.
//   func (w *Worker) Rank() int
//   func (w *Worker) Size() int
//   func (w *Worker) Next() ring.Link  // to (rank+1)%size
//   func (w *Worker) Prev() ring.Link  // from (rank-1+size)%size
//   func (w *Worker) Metrics() *Metrics // counters collective updates (bytes, ops, errors)
//   func (w *Worker) Close() error     // idempotent; leaves memberlist, closes links, waits for goroutines
//
// With WorldSize 1, Start needs no secret and no network; Next and Prev are
// unused.
