#!/usr/bin/env bash
# Time the embedded default end to end on this machine, in a scratch copy of the workflow:
# a cold run of `snakemake all`, then an immediate rerun (which must have nothing to do).
#   bash benchmarks/embedded_pipeline.sh [TARGET_DIR] [extra snakemake args, e.g. --config ablations=true]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/ddm-embedded.XXXX)}
shift || true
mkdir -p "$work"
cp -r "$repo/Snakefile" "$repo/params.yaml" "$repo/workflow" "$repo/profiles" "$work/"
mkdir -p "$work/reports" && cp "$repo/reports/report.tex.j2" "$work/reports/"   # report.pdf's template
cd "$work"
sm="$repo/.venv/bin/snakemake"
t0=$(date +%s.%N)
"$sm" all "$@" > snakemake.log 2>&1
t1=$(date +%s.%N)
"$sm" all "$@" > snakemake-rerun.log 2>&1
t2=$(date +%s.%N)
grep -q "Nothing to be done" snakemake-rerun.log
printf 'cold run: %.0f s\nrerun: %.1f s (nothing to be done)\nwork dir: %s\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$work"
for f in logs/train/*/*.log; do printf '%s: %s\n' "$f" "$(tail -n 2 "$f" | head -n 1)"; done
# job-seconds per rule (from Snakemake's benchmark-free log: the start/finish stamps of each job)
"$repo/.venv/bin/python" "$repo/benchmarks/job_times.py" snakemake.log || true
