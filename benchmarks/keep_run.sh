#!/usr/bin/env bash
# Keep a measured run's reports in the repository, so that a later change can be compared with it
# (`ddm compare benchmarks/runs/A benchmarks/runs/B`) and its docs block regenerated
# (benchmarks/run_summary.py) after the run's folder is gone:
#
#   bash benchmarks/keep_run.sh RUN_FOLDER NAME      # -> benchmarks/runs/NAME/
#
# It copies, under their paths in the run: reports/metrics.json (checksummed: ddm.contracts),
# results/metrics/<dataset>/fig3.json where the run has Fig. 3, reports/tables.tex and
# reports/claims.tex, and the run's segments.tsv where benchmarks/long_run.sh made it. A few
# hundred kB; no model, sample or log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
run=${1:?usage: keep_run.sh RUN_FOLDER NAME}
name=${2:?usage: keep_run.sh RUN_FOLDER NAME}
[ -f "$run/reports/metrics.json" ] || { echo "keep_run.sh: $run/reports/metrics.json is missing: give a finished run's folder" >&2; exit 2; }
dest="$repo/benchmarks/runs/$name"
[ ! -e "$dest" ] || { echo "keep_run.sh: $dest exists: give another NAME" >&2; exit 2; }
tmp=$(mktemp -d "$repo/benchmarks/.keep.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$run"
for f in reports/metrics.json results/metrics/*/fig3.json reports/tables.tex reports/claims.tex segments.tsv; do
  if [ -f "$f" ]; then cp --parents "$f" "$tmp/"; fi
done
"$repo/.venv/bin/ddm" compare "$tmp" "$tmp" > /dev/null 2>&1 || {   # the kept metrics pass their checksum
  echo "keep_run.sh: $run/reports/metrics.json does not pass \`ddm compare\` (run it on $run to see why)" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
mv "$tmp" "$dest"
trap - EXIT
echo "kept $(find "$dest" -type f | wc -l) files in $dest"
