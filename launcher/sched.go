package main

import (
	"encoding/hex"
	"net"
	"strconv"

	"github.com/vccl/vccl/internal/schedenv"
)

// Variables the launcher reads but never sets (copies of the worker's, see
// env.go).
const (
	envSecretFile = "VCCL_SECRET_FILE" // worker.EnvSecretFile
	envRdzvPort   = "VCCL_RDZV_PORT"   // worker.EnvRdzvPort
	envK8sService = "VCCL_K8S_SERVICE" // worker.EnvK8sService
	envK8sJob     = "VCCL_K8S_JOB"     // worker.EnvK8sJob
)

// fromEnv fills in what the command line left out from the environment:
//
//   - inside a Slurm step (srun … launcher), every task is one node:
//     --nnodes is SLURM_NTASKS, --node-rank SLURM_PROCID and --rdzv the
//     first host of the step's nodelist at VCCL_RDZV_PORT or the port
//     derived from the job and step ids, unless one of the three flags is
//     given;
//   - for a multi-node job without --secret or --secret-file, the secret
//     comes from VCCL_SECRET_FILE (read as --secret-file) or VCCL_SECRET
//     (hex, handed to the ranks unchanged, as collective.InitFromEnv would
//     use it without the launcher).
//
// set holds the names of the flags given.
func (o *options) fromEnv(env schedenv.Lookup, set map[string]bool) error {
	get := func(name string) string {
		v, _ := env(name)
		return v
	}
	if t := schedenv.Detect(env); t != nil && t.Scheduler == schedenv.Slurm && !set["nnodes"] && !set["node-rank"] && !set["rdzv"] {
		for _, err := range []error{t.RankErr, t.WorldErr} {
			if err != nil {
				return usagef("%s: %v (or give --nnodes, --node-rank and --rdzv)", t.Where, err)
			}
		}
		o.nnodes, o.nodeRank, o.sched = t.WorldSize, t.Rank, t.Where
		if o.nnodes > 1 {
			if t.RdzvErr != nil {
				return usagef("%s: no rendezvous address: %v (or give --rdzv)", t.Where, t.RdzvErr)
			}
			port := t.RdzvPort
			if v := get(envRdzvPort); v != "" {
				p, err := strconv.Atoi(v)
				if err != nil || p < 1 || p > 65535 {
					return usagef("%s=%q is not a port in 1..65535", envRdzvPort, v)
				}
				port = p
			}
			o.rdzv = net.JoinHostPort(t.RdzvHost, strconv.Itoa(port))
		}
	}
	if o.nnodes > 1 && o.secret == "" && o.secretFile == "" {
		if f := get(envSecretFile); f != "" {
			o.secretFile, o.secretName = f, envSecretFile
		} else if v := get(envSecret); v != "" {
			if _, err := hex.DecodeString(v); err != nil {
				return usagef("%s is not hex (%d characters): %v", envSecret, len(v), err)
			}
			o.secretHex = v
		}
	}
	return nil
}

// workerSecretHex is the VCCL_SECRET every rank gets: VCCL_SECRET as given
// to the launcher, or the key derived from the job secret.
func (o *options) workerSecretHex(secret []byte) string {
	if o.secretHex != "" {
		return o.secretHex
	}
	return hex.EncodeToString(deriveKey(secret, "worker"))
}
