#!/usr/bin/env bash
# Does sharding make the embedded default faster? Side by side on this machine: one cold run
# trains the models and builds the FID references (shared), then the sample + evaluate phase of
# Table 1 (`snakemake phase_evaluate`) runs in two copies of it, one after the other: params.yaml
# as shipped (shard_size 500: one job per set) and with shard_size S (a set of 500 in 500/S jobs).
#   bash benchmarks/shard_timing.sh [WORK_DIR] [S=100]
# The conditioned tasks are left out (--config conditioned=False): sharding does not touch them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/ddm-shards.XXXX)}
size=${2:-100}
sm=${SNAKEMAKE:-$repo/.venv/bin/snakemake}
export PYTHONPATH=$repo  # the jobs run this checkout's ddm
mkdir -p "$work/base"
cp -r "$repo/Snakefile" "$repo/params.yaml" "$repo/workflow" "$repo/profiles" "$work/base/"
cd "$work/base"
t0=$(date +%s.%N)
"$sm" --cores 2 --config conditioned=False -- phase_train phase_reference > snakemake.log 2>&1
printf 'shared part (train, reference): %.0f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
for variant in one "shards$size"; do
  cp -a "$work/base" "$work/$variant"
  cd "$work/$variant"
  if [ "$variant" != one ]; then sed -i "0,/^      shard_size: 500$/s//      shard_size: $size/" params.yaml; fi
  grep -n "shard_size" params.yaml | head -n 1
  t0=$(date +%s.%N)
  "$sm" --cores 2 --config conditioned=False -- phase_evaluate > snakemake.log 2>&1
  t1=$(date +%s.%N)
  printf '%s: sample + evaluate %.0f s, %s jobs, load average %s\n' "$variant" "$(echo "$t1 - $t0" | bc)" \
    "$(grep -c '^Finished jobid' snakemake.log || true)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  "${sm%/snakemake}/python" "$repo/benchmarks/job_times.py" snakemake.log || true
done
