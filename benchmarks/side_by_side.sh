#!/usr/bin/env bash
# The embedded default at two commits, cold and side by side on this machine (one core each, so
# both see the same load), then their outputs compared: tables.tex without its provenance lines,
# and every number of reports/metrics.json (the checksum and provenance fields aside).
#   bash benchmarks/side_by_side.sh OLD_COMMIT NEW_COMMIT [WORK_DIR] [extra snakemake args]
# Prints each run's cold time, their ratio (new / old) and whether the outputs agree.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
old=$1 new=$2
work=${3:-$(mktemp -d /tmp/ddm-side-by-side.XXXX)}
shift 3 || shift $#
extra=("$@")  # extra snakemake arguments, for both runs
mkdir -p "$work"
sm="$repo/.venv/bin/snakemake"

run() {  # run NAME COMMIT: a clean export of COMMIT, its own ddm (PYTHONPATH) and snapshot cache
  local dir="$work/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  git -C "$repo" archive "$2" | tar -x -C "$dir"
  ( cd "$dir"
    export PYTHONPATH="$dir" DDM_CACHE_DIR="$dir/.cache"
    t0=$(date +%s.%N)
    "$sm" --cores 1 all "${extra[@]}" > snakemake.log 2>&1 || { echo "$1: snakemake failed (see $dir/snakemake.log)" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc > cold_seconds )
}

run old "$old" &
p_old=$!
run new "$new" &
p_new=$!
wait "$p_old" && wait "$p_new"

"$repo/.venv/bin/python" - "$work" "$old" "$new" <<'EOF'
import json, math, sys
from pathlib import Path

work, old, new = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
SKIP = {"sha256", "provenance", "computed_at"}

def numbers(obj, at=""):
    if isinstance(obj, dict):
        for k, v in sorted(obj.items()):
            if k not in SKIP:
                yield from numbers(v, f"{at}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{at}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield at, obj

def tables(run):
    return [line for line in (work / run / "reports/tables.tex").read_text().splitlines()
            if "rovenance" not in line and "commit" not in line]

t_old, t_new = (float((work / r / "cold_seconds").read_text()) for r in ("old", "new"))
print(f"cold run, one core each, side by side: old {old} {t_old:.0f} s, new {new} {t_new:.0f} s, "
      f"new / old {t_new / t_old:.3f}")
a = dict(numbers(json.loads((work / "old/reports/metrics.json").read_text())))
b = dict(numbers(json.loads((work / "new/reports/metrics.json").read_text())))
differ = sorted(k for k in a.keys() & b.keys() if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k]))))
print(f"metrics.json: {len(a.keys() & b.keys())} numbers in both, {len(differ)} differ"
      f"{': ' + ', '.join(differ[:10]) if differ else ''}; only old: {sorted(a.keys() - b.keys())[:10]}; "
      f"only new: {sorted(b.keys() - a.keys())[:10]}")
same = tables("old") == tables("new")
print(f"tables.tex without its provenance lines: {'identical' if same else 'DIFFERENT'}")
EOF
