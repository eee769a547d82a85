package collective

// Planned API (the contract examples and the launcher build on):
//
//   type Config struct {
//       Rank, WorldSize int; Join []string; BindAddr string; BindPort int; Secret []byte
//       Codec string; Backend string; BitsPerValue float64; Preset string
//       ErrorFeedback bool   // default true
//       WarmupSteps int      // uncompressed allreduces at the start; default 3? (document)
//       RawBelow int         // tensors with fewer values, and 1-D tensors, go raw; default 4096
//       BucketBytes int      // default 25 MiB
//       PeerTimeout, JoinTimeout time.Duration
//   }
//   func DefaultConfig() Config
//   func Init(ctx context.Context, cfg Config) (*Comm, error)
//   func InitFromEnv(ctx context.Context) (*Comm, error)  // worker.Env* variables
//   func (c *Comm) Rank() int; Size() int; Close() error
//   func (c *Comm) AllReduce(ctx, data []float32, opts ...Option) (Stats, error)
//   func (c *Comm) AllReduceAsync(ctx, data []float32, opts ...Option) *Handle; (h *Handle) Wait() (Stats, error)
//   func (c *Comm) Broadcast(ctx, data []float32, root int) error
//   func (c *Comm) AllGather(ctx, local []byte) ([][]byte, error)
//   func (c *Comm) Barrier(ctx) error
//   Options: WithAverage(), WithCodec(name), WithShape(rows, cols) / WithLayout([]gradcodec.Shape), WithBitsPerValue(b)
//   Bucketer: NewBucketer(c, []Tensor, BucketOptions); MarkReady(i); Wait(ctx) (Stats, error)
//   Sentinels re-exported: ErrPeerLost, ErrShapeMismatch, ErrNonFinite, ErrBadFrame.
