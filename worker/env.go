package worker

// Environment variables that the launcher sets for every rank and that
// collective.InitFromEnv reads.
const (
	EnvRank        = "VCCL_RANK"         // global rank, 0..WorldSize-1
	EnvLocalRank   = "VCCL_LOCAL_RANK"   // rank among the processes of this node
	EnvWorldSize   = "VCCL_WORLD_SIZE"   // number of ranks in the job
	EnvJoin        = "VCCL_JOIN"         // comma-separated host:port memberlist addresses to join
	EnvSecret      = "VCCL_SECRET"       // job secret (hex), authenticates membership and links
	EnvBindAddr    = "VCCL_BIND_ADDR"    // IP this rank binds and advertises; default 127.0.0.1
	EnvBindPort    = "VCCL_BIND_PORT"    // memberlist port of this rank; 0 or unset picks a free one
	EnvMetricsAddr = "VCCL_METRICS_ADDR" // optional host:port for /metrics and /healthz
	EnvCodec       = "VCCL_CODEC"        // raw|fp16|bf16|int8|h264|hevc
	EnvBackend     = "VCCL_BACKEND"      // auto|nvenc|software
	EnvBPV         = "VCCL_BPV"          // target bits per value, e.g. 1.4
	EnvBucketBytes = "VCCL_BUCKET_BYTES" // bucket size of the DDP-style bucketer in bytes
	EnvPeerTimeout = "VCCL_PEER_TIMEOUT" // Go duration; failure detection bound, default 10s
	EnvJoinTimeout = "VCCL_JOIN_TIMEOUT" // Go duration; how long to wait for the whole world, default 60s
	EnvSharedMem   = "VCCL_SHM"          // "off", or the size in bytes of a same-host link's shared-memory ring

	// Read by ConfigFromEnv, never set by the launcher: the job secret from
	// a file, and the scheduler mapping's knobs (see ConfigFromEnv).
	EnvSecretFile = "VCCL_SECRET_FILE" // file holding the job secret (at least 16 characters); VCCL_SECRET wins
	EnvRdzvPort   = "VCCL_RDZV_PORT"   // rendezvous port under Slurm or Kubernetes (rank 0's memberlist port)
	EnvK8sService = "VCCL_K8S_SERVICE" // Kubernetes: the Indexed Job's headless Service (the pods' subdomain)
	EnvK8sJob     = "VCCL_K8S_JOB"     // Kubernetes: the Job's name; default: the pod's host name without "-<index>"
)
