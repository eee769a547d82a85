// Command launcher starts and supervises a vccl job: one process per rank,
// on one node or on many, the way mpirun -np, horovodrun or torchrun do.
//
// Single node:
//
//	launcher -np 4 -- ./train -epochs 3
//
// starts four processes of ./train with the environment that
// collective.InitFromEnv reads (VCCL_RANK, VCCL_LOCAL_RANK, VCCL_WORLD_SIZE,
// VCCL_JOIN, VCCL_SECRET, VCCL_BIND_ADDR, VCCL_BIND_PORT and, when the codec
// flags are given, VCCL_CODEC, VCCL_BACKEND, VCCL_BPV, VCCL_BUCKET_BYTES).
// Every line a rank writes is prefixed with "[rank] "; stdout stays stdout
// and stderr stays stderr, and lines are never interleaved mid-line.
//
// The first rank that exits non-zero or dies by a signal stops the job: the
// other ranks get SIGTERM, then SIGKILL after --grace; each rank runs in its
// own process group, so its children get the signals too. The launcher
// prints which rank failed and how, and exits with that rank's exit code
// (128+N for signal N). SIGINT, SIGTERM and SIGHUP sent to the launcher are
// forwarded to every rank; --timeout ends a job that runs too long (exit
// code 124). Bad input (a missing program, -np < 1, a port in use, an
// unreachable rendezvous, nodes that disagree on the world size) ends with a
// message and exit code 2.
//
// Multi-node, torchrun-style and without ssh: every node runs
//
//	launcher --nnodes 2 --node-rank K --rdzv HOST:PORT --secret-file F -np 2 -- ./train
//
// Node 0 binds HOST:PORT; the nodes meet there through hashicorp/memberlist,
// encrypted with a key derived from the job secret, check that they agree on
// the job's shape, and start their ranks (node K holds global ranks
// K*np .. K*np+np-1). A failure on any node stops every node.
//
// Inside a Slurm step, one task per node,
//
//	srun --ntasks-per-node=1 launcher -np 4 -- ./train
//
// takes --nnodes from SLURM_NTASKS, --node-rank from SLURM_PROCID and
// --rdzv from the first host of the step's nodelist (port VCCL_RDZV_PORT,
// else one derived from the job and step ids), and the job secret from
// VCCL_SECRET_FILE or VCCL_SECRET; flags given on the command line win.
// Without the launcher, srun of the program itself works too:
// collective.InitFromEnv reads the same Slurm variables.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
