#!/usr/bin/env bash
# Install SLURM (slurmctld, slurmd, sbatch/srun/squeue/...) and munge for tests/test_slurm.py,
# which brings up a one-machine cluster (tests/slurm_cluster.py). Idempotent: does nothing when
# the programs are already there. Debian 12 ships slurm-wlm 22.05 and munge 0.5.15 (~11 s).
# Needs root (or sudo); no daemon is started here, and no systemd is needed.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"   # the daemons live in /usr/sbin
needed=(slurmctld slurmd sbatch srun squeue sinfo scontrol scancel munged munge unmunge)
missing=()
for p in "${needed[@]}"; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-slurm: already installed ($(sbatch --version 2>/dev/null || echo 'sbatch present'))"
    exit 0
fi
echo "install-slurm: missing ${missing[*]}; installing slurm-wlm and munge"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-slurm: needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install-slurm: installed $(sbatch --version)"
