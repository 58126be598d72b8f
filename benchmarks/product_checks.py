"""What the product checks cost: ddm.io.verify_product over every product of a run folder, the
check a real `snakemake all` (and each DVC stage's Snakemake, for its phase) makes before any job
(workflow/rules/common.smk: verified_before_run).

    python benchmarks/product_checks.py RUN_FOLDER [--repeat 3]

Prints per kind of product (models, samples, data, FID statistics, metric JSON, ...) the files,
their MB and the seconds to verify them (the best of --repeat passes: the page cache warm, as
for a second run), and the total. Run it where the run's files are; nothing is written.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import yaml

from ddm.io import TMP_PREFIX, verify_product

#: The suffixes of the products that carry a digest (ddm.io).
SUFFIXES = (".pt", ".npz", ".json")


def products(run: Path) -> list[Path]:
    """The files under the outs of the run's workflow/phases.yaml (checkpoints are no product)."""
    phases = yaml.safe_load((run / "workflow" / "phases.yaml").read_text())
    outs = [run / o for p in phases.values() for o in p["outs"]]
    files = [f for o in outs for f in ([o] if o.is_file() else o.rglob("*"))]
    return sorted(p for p in files if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(TMP_PREFIX))


def kind(run: Path, path: Path) -> str:
    parts = path.relative_to(run).parts
    return "/".join(parts[:2]) + ("/tasks" if "tasks" in parts else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    files = products(args.run)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        took: dict[str, float] = defaultdict(float)
        for p in files:
            t = time.perf_counter()
            assert verify_product(p) is None, p
            took[kind(args.run, p)] += time.perf_counter() - t
        best = {k: min(v, best.get(k, v)) for k, v in took.items()}
    sizes: dict[str, list[int]] = defaultdict(list)
    for p in files:
        sizes[kind(args.run, p)].append(p.stat().st_size)
    print(f"{'products':28s} {'files':>6s} {'MB':>9s} {'seconds':>8s}")
    for k in sorted(sizes, key=lambda k: -best[k]):
        print(f"{k:28s} {len(sizes[k]):6d} {sum(sizes[k]) / 1e6:9.2f} {best[k]:8.3f}")
    total = sum(sum(v) for v in sizes.values())
    print(f"{'total':28s} {len(files):6d} {total / 1e6:9.2f} {sum(best.values()):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
