// Package slurmtest runs vccl jobs on a real Slurm: its test (root only)
// writes a one-node slurm.conf into a temporary directory, starts munged,
// slurmctld and slurmd there on ports of their own, and runs srun and
// sbatch of allreduce_perf, of a program with a failing rank and of the
// launcher inside a step, then stops everything it started. Debian's
// slurm-wlm (22.05) and munge provide the daemons; scripts/setup-slurm.sh
// installs them and the test skips, saying so, where they are missing.
// The package has no code outside its test.
package slurmtest
