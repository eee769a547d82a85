package main

// The variables the launcher sets for every rank. The names are those of
// the worker package's Env* constants (worker/env.go); they are repeated
// here so that the launcher stays a pure-Go binary that starts fast and
// needs no FFmpeg libraries (importing worker would link gradcodec's cgo).
// TestEnvNamesMatchWorker keeps the two lists equal.
const (
	envRank        = "VCCL_RANK"         // worker.EnvRank
	envLocalRank   = "VCCL_LOCAL_RANK"   // worker.EnvLocalRank
	envWorldSize   = "VCCL_WORLD_SIZE"   // worker.EnvWorldSize
	envJoin        = "VCCL_JOIN"         // worker.EnvJoin
	envSecret      = "VCCL_SECRET"       // worker.EnvSecret
	envBindAddr    = "VCCL_BIND_ADDR"    // worker.EnvBindAddr
	envBindPort    = "VCCL_BIND_PORT"    // worker.EnvBindPort
	envMetricsAddr = "VCCL_METRICS_ADDR" // worker.EnvMetricsAddr
	envCodec       = "VCCL_CODEC"        // worker.EnvCodec
	envBackend     = "VCCL_BACKEND"      // worker.EnvBackend
	envBPV         = "VCCL_BPV"          // worker.EnvBPV
	envBucketBytes = "VCCL_BUCKET_BYTES" // worker.EnvBucketBytes
	envPeerTimeout = "VCCL_PEER_TIMEOUT" // worker.EnvPeerTimeout
	envJoinTimeout = "VCCL_JOIN_TIMEOUT" // worker.EnvJoinTimeout
	envSharedMem   = "VCCL_SHM"          // worker.EnvSharedMem
)

// workerEnv maps the worker package's constant names to the launcher's
// copies, for TestEnvNamesMatchWorker.
var workerEnv = map[string]string{
	"EnvRank": envRank, "EnvLocalRank": envLocalRank, "EnvWorldSize": envWorldSize,
	"EnvJoin": envJoin, "EnvSecret": envSecret, "EnvBindAddr": envBindAddr,
	"EnvBindPort": envBindPort, "EnvMetricsAddr": envMetricsAddr, "EnvCodec": envCodec,
	"EnvBackend": envBackend, "EnvBPV": envBPV, "EnvBucketBytes": envBucketBytes,
	"EnvPeerTimeout": envPeerTimeout, "EnvJoinTimeout": envJoinTimeout, "EnvSharedMem": envSharedMem,
	"EnvSecretFile": envSecretFile, "EnvRdzvPort": envRdzvPort, "EnvK8sService": envK8sService, "EnvK8sJob": envK8sJob,
}
