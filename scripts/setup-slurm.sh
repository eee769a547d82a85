#!/usr/bin/env bash
# setup-slurm.sh installs Debian's Slurm 22.05 (slurmctld, slurmd, slurm-client) and munge, for
# the test that runs vccl jobs on a real one-node Slurm (internal/slurmtest). That test starts its
# own munged, slurmctld and slurmd in a temporary directory, on ports of its own; nothing here is
# configured system-wide. The packages' own services stay unconfigured (slurmd and slurmctld do not
# start without /etc/slurm/slurm.conf; munge starts with the key its package generates). It is not
# part of setup.sh, which the main job runs too: an HPC scheduler's daemons are not something to put
# on every machine that only trains. Idempotent; without root or sudo it says so and does nothing
# (the test then skips, saying why).
set -euo pipefail
pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
	if ! sudo -n true 2>/dev/null; then
		echo "setup-slurm: ${missing[*]} missing and no root or password-less sudo; the Slurm test will skip" >&2
		exit 0
	fi
	sudo="sudo -n"
fi
echo "setup-slurm: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
