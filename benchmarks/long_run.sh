#!/usr/bin/env bash
# A long measured run (the converged run with its ablations: about 3 h on 2 cores) in segments:
# each call runs `snakemake all` in DIR until it finishes or the call is stopped, and the next call
# goes on from there. Snakemake reruns only what is missing or incomplete (profiles/default:
# rerun-incomplete) and a training resumes from its last checkpoint (docs/training.md), so a
# segment ended by a session's end loses at most the unfinished jobs' progress since their last
# checkpoint.
#
#   bash benchmarks/long_run.sh DIR --configfile runs/converged.yaml --config ablations=True
#   bash benchmarks/long_run.sh DIR              # later: the next segment, with the first call's arguments
#
# The first call clones this repository's HEAD into DIR and runs ./setup.sh there (the cold run's
# set-up). Every call appends to DIR/segments.tsv a `start` line (its number, the time in UTC, the
# commit and the CPU: model name, family, model, so a run whose segments ran on different machines
# says so) and, when it ends or is sent SIGTERM/SIGINT/SIGHUP, an `end` line (time, wall seconds,
# Snakemake's exit code, load average). A segment killed outright has no `end` line: its wall time
# is its log's, from the first to the last stamp. Snakemake's output of segment N is
# DIR/segment-N.err; the job-seconds per rule and the wall time over all segments:
#   .venv/bin/python benchmarks/job_times.py DIR/segment-*.err
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: long_run.sh DIR [snakemake arguments of the first segment]}
shift

if [ ! -e "$dir/long_run.args" ]; then
  [ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || { echo "long_run.sh: $dir is neither empty nor a run of this script: name a new folder" >&2; exit 2; }
  git clone -q "$repo" "$dir"
  printf 'n\tevent\ttime\tseconds\trc\tload\tcommit\tcpu\n' > "$dir/segments.tsv"
  printf '%s\n' "$@" > "$dir/long_run.args"   # last: its presence says the folder is this script's
elif [ "$#" -gt 0 ] && [ "$(printf '%s\n' "$@")" != "$(cat "$dir/long_run.args")" ]; then
  echo "long_run.sh: $dir was started with other arguments ($(tr '\n' ' ' < "$dir/long_run.args")): give none to go on" >&2
  exit 2
fi
if [ ! -e "$dir/setup.done" ]; then   # the cold run's set-up, again if a stop cut it short
  ( cd "$dir" && /usr/bin/time -f "setup: %e s" ./setup.sh ) > "$dir/setup.log" 2>&1
  touch "$dir/setup.done"
fi

cd "$dir"
mapfile -t args < long_run.args
n=$(( $(grep -c $'\tstart\t' segments.tsv || true) + 1 ))
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1), family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p')"
printf '%s\tstart\t%s\t\t\t\t%s\t%s\n' "$n" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$cpu" >> segments.tsv
t0=$(date +%s)
finish() {
  printf '%s\tend\t%s\t%s\t%s\t%s\t\t\n' "$n" "$(date -u +%FT%TZ)" "$(( $(date +%s) - t0 ))" "$1" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" >> segments.tsv
}
trap 'finish stopped; exit 143' TERM INT HUP
.venv/bin/snakemake --unlock "${args[@]}" > /dev/null 2>&1 || true   # a segment stopped by force leaves the lock
rc=0
.venv/bin/snakemake all "${args[@]}" > "segment-$n.out" 2> "segment-$n.err" || rc=$?
trap - TERM INT HUP
finish "$rc"
column -t -s $'\t' segments.tsv
.venv/bin/python "$repo/benchmarks/job_times.py" segment-*.err || true
exit "$rc"
