"""Job-seconds per rule of one Snakemake run, read from its log (the `[date]` stamp before each
job's start and before its "Finished jobid: N (Rule: R)" line; 1 s resolution).

  .venv/bin/python benchmarks/job_times.py snakemake.log      # or .snakemake/log/<run>.snakemake.log
  .venv/bin/python benchmarks/job_times.py seg1.err seg2.err  # a run resumed over several segments

Prints, per rule, the number of jobs, their summed wall seconds and the mean per job, and the
run's wall time: where a cold run's time goes (training, sampling, per-job start-up). Given the logs
of a run's segments (benchmarks/long_run.sh), it adds them up: a job a segment's end stopped has no
"Finished" line and counts in its segment's wall time only, as the job that redoes it counts in the next.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_times(lines: list[str]) -> tuple[dict[str, list[float]], float]:
    """``({rule: [seconds of each job]}, wall seconds from the first to the last stamp)``."""
    started: dict[str, datetime] = {}
    per_rule: dict[str, list[float]] = defaultdict(list)
    stamp = first = None
    pending = None
    for line in lines:
        m = STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            continue
        if START.match(line):
            pending = stamp
            continue
        m = JOBID.match(line)
        if m and pending is not None:
            started[m.group(1)] = pending
            pending = None
            continue
        m = FINISHED.match(line.strip())
        if m and m.group(1) in started:
            per_rule[m.group(2)].append((stamp - started.pop(m.group(1))).total_seconds())
    wall = (stamp - first).total_seconds() if first and stamp else 0.0
    return dict(per_rule), wall


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: job_times.py SNAKEMAKE_LOG [SNAKEMAKE_LOG ...]  (several: the segments of one run)")
    per_rule: dict[str, list[float]] = defaultdict(list)
    wall = 0.0
    for path in argv:
        with open(path, errors="replace") as f:
            rules, seconds = job_times(f.read().splitlines())
        for rule, secs in rules.items():
            per_rule[rule] += secs
        wall += seconds
    total = sum(sum(v) for v in per_rule.values())
    print(f"{'rule':<18}{'jobs':>6}{'job-s':>9}{'mean s':>9}")
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:<18}{len(secs):>6}{sum(secs):>9.0f}{sum(secs) / len(secs):>9.1f}")
    segments = f" over {len(argv)} segments" if len(argv) > 1 else ""
    print(f"{'total':<18}{sum(map(len, per_rule.values())):>6}{total:>9.0f}   wall {wall:.0f} s{segments}")


if __name__ == "__main__":
    main(sys.argv[1:])
