"""``ddm compare RUN_A RUN_B``: two runs' numbers side by side, cell by cell, and every verdict that changed.

A speed-up (a compiled network call, another batch size, fewer steps to the same plateau) may
change numerics; it may not change what the run shows. This module reads each run's
reports/metrics.json (``ddm stats``) and, where the run has them, Fig. 3's curves
(results/metrics/<dataset>/fig3.json), and reports:

* every table cell of either run (Tables 1, 4, 5 and the solver table: FID per dataset, method
  and NFE; Tables 2 and 3: the task metric per task, method and NFE): both means, the difference
  B - A, and the difference in units of the cell's std (:func:`cell_std`: the root mean square of
  the two runs' stds, over training seeds where the cell has them, else over sample sets);
* every verdict of :mod:`ddm.claims` (recomputed here, by this checkout's criteria, from each
  run's metrics) and of the plateau check (``ddm.plateau``, per network) that differs.

:func:`compare` flags a cell that moves by more than ``tolerance`` stds (or, for a cell of one
value with no std, by more than ``rel_tolerance`` of run A's value), the mean signed move of a
table's cells with a std (per Table 1 dataset, per conditioned task) when it exceeds
``shift_tolerance`` stds (a systematic shift that no single cell shows: "every FID up by a seed's
std" is a changed method, not noise), and every verdict that changed. The defaults, and why:

* ``tolerance`` 2.0: a cell is the mean of K values (training seeds, or sample sets) of spread
  ``std``; the cells of two runs whose numerics differ are independent draws, and their difference
  has a std of sqrt(2 / K) cell stds (0.82 for K = 3). 2.0 is 2.4 of those: about 1 cell in 60 of
  such a pair is flagged by chance, none of a same-numerics pair (difference 0). A flagged cell is
  where to look, and a rerun the check. Between two CPUs the same seeded run moved each FID by
  about 2.5 % (docs/measurements.md), about 0.1 std of a converged Table 1 cell.
* ``shift_tolerance`` 0.75: the mean of a table's n moves has a std of sqrt(2 / K / n) if they were
  independent (0.29 for Table 1's 8 cells of 3 seeds); 0.75 is 2.6 of those.
* ``rel_tolerance`` 0.05: a cell of one sample set (no std) moving by more than 5 % (twice the
  cross-CPU move).

The exit status of ``ddm compare`` is 0 when nothing is flagged and 1 otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from ddm.io import InputError

__all__ = ["Cell", "Comparison", "cells", "cell_std", "load_run", "compare", "format_comparison", "to_json",
           "TOLERANCE", "SHIFT_TOLERANCE", "REL_TOLERANCE"]

TOLERANCE = 2.0
SHIFT_TOLERANCE = 0.75
REL_TOLERANCE = 0.05


@dataclass(frozen=True)
class Cell:
    """One table cell of a run: where it is (``key``: table, dataset or task, method, NFE), its
    mean, std (None for one value), the values behind it and their unit."""

    key: tuple
    mean: float
    std: float | None
    values: tuple
    unit: str


def _cell(key: tuple, r: Mapping) -> Cell:
    std = r.get("std")
    std = None if std is None or (isinstance(std, float) and math.isnan(std)) else float(std)
    return Cell(key, float(r["mean"]), std, tuple(r.get("values", ())), r.get("unit") or "sample sets")


def cells(metrics: Mapping) -> dict[tuple, Cell]:
    """Every table cell of reports/metrics.json, keyed ``("fid", dataset, method, nfe)`` or
    ``(metric, task, method, nfe)`` for the conditioned tasks."""
    out = {}
    for ds, d in sorted(metrics.get("datasets", {}).items()):
        for method, by_nfe in sorted(d.get("results", {}).items()):
            for nfe in sorted(by_nfe, key=int):
                key = ("fid", ds, method, int(nfe))
                out[key] = _cell(key, by_nfe[nfe])
    for task, t in sorted((metrics.get("conditioned") or {}).get("tasks", {}).items()):
        for method, by_nfe in sorted(t.get("results", {}).items()):
            for nfe in sorted(by_nfe, key=int):
                key = (t["metric"], task, method, int(nfe))
                out[key] = _cell(key, by_nfe[nfe])
    return out


def cell_std(a: Cell, b: Cell) -> float | None:
    """The std a cell's move is measured in: the root mean square of both runs' stds (one run's
    where the other has none); None where neither has one, or both are 0."""
    stds = [s for s in (a.std, b.std) if s is not None]
    if not stds:
        return None
    s = math.sqrt(sum(x * x for x in stds) / len(stds))
    return s if s > 0 else None


def load_run(path: str | Path) -> tuple[dict, dict]:
    """(metrics, fig3) of a run: ``path`` is a run's folder (its reports/metrics.json and
    results/metrics/*/fig3.json) or a metrics.json file (no Fig. 3 curves). The metrics file's
    checksum is verified (``ddm.contracts``)."""
    from ddm.contracts import load_json_product as load_json

    p = Path(path)
    if p.is_dir():
        metrics_path = p / "reports" / "metrics.json"
        fig3_paths = sorted((p / "results" / "metrics").glob("*/fig3.json"))
    else:
        metrics_path, fig3_paths = p, []
    if not metrics_path.is_file():
        raise InputError(f"run {path}: no {metrics_path} (give a run's folder, where `snakemake all` wrote "
                         "reports/metrics.json, or a metrics.json file)")
    metrics = load_json(metrics_path, "metrics")
    fig3 = {f.parent.name: load_json(f, "fig3") for f in fig3_paths}
    return metrics, fig3


@dataclass
class Comparison:
    """What :func:`compare` found: per cell ``(key, a, b, diff, z, flagged)`` (a or b None where
    one run lacks the cell), per table ``(group, mean move in stds, cells, flagged)``, and the
    changed verdicts."""

    rows: list = field(default_factory=list)
    shifts: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)  # (what, verdict A, verdict B)
    tolerance: float = TOLERANCE
    shift_tolerance: float = SHIFT_TOLERANCE
    rel_tolerance: float = REL_TOLERANCE

    @property
    def flagged(self) -> bool:
        return any(s[-1] for s in self.shifts) or bool(self.verdicts) or any(r[-1] for r in self.rows)


def _claim_verdicts(metrics: Mapping, fig3: Mapping) -> dict[str, str]:
    from ddm.claims import verdicts

    return {r["id"]: r["verdict"] for r in verdicts({**metrics, "fig3": fig3} if fig3 else metrics)}


def _plateau_verdicts(metrics: Mapping) -> dict[str, str]:
    return {f"plateau {ds} {m}": p["verdict"] for ds, d in sorted(metrics.get("datasets", {}).items())
            for m, p in sorted(d.get("plateau", {}).items())}


def _changed(a: Mapping[str, str], b: Mapping[str, str]) -> Iterator[tuple]:
    for what in list(a) + [k for k in b if k not in a]:
        if a.get(what) != b.get(what):
            yield what, a.get(what, "absent"), b.get(what, "absent")


def compare(run_a: tuple[dict, dict], run_b: tuple[dict, dict], *, tolerance: float = TOLERANCE,
            shift_tolerance: float = SHIFT_TOLERANCE, rel_tolerance: float = REL_TOLERANCE) -> Comparison:
    """Compare two runs' ``(metrics, fig3)`` (:func:`load_run`); see the module docstring."""
    (ma, fa), (mb, fb) = run_a, run_b
    ca, cb = cells(ma), cells(mb)
    out = Comparison(tolerance=tolerance, shift_tolerance=shift_tolerance, rel_tolerance=rel_tolerance)
    zs: dict[tuple, list] = {}
    for key in list(ca) + [k for k in cb if k not in ca]:
        a, b = ca.get(key), cb.get(key)
        if a is None or b is None:
            out.rows.append((key, a, b, None, None, True))
            continue
        diff, std = b.mean - a.mean, cell_std(a, b)
        if std is not None:
            z = diff / std
            zs.setdefault(key[:2], []).append(z)
            flagged = abs(z) > tolerance
        else:
            z = None
            flagged = abs(diff) > rel_tolerance * abs(a.mean) if a.mean else diff != 0
        out.rows.append((key, a, b, diff, z, flagged))
    for group, z in zs.items():
        mean = sum(z) / len(z)
        out.shifts.append((group, mean, len(z), abs(mean) > shift_tolerance))
    out.verdicts = list(_changed(_claim_verdicts(ma, fa), _claim_verdicts(mb, fb)))
    out.verdicts += list(_changed(_plateau_verdicts(ma), _plateau_verdicts(mb)))
    return out


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def format_comparison(c: Comparison, name_a: str = "A", name_b: str = "B") -> str:
    """The text ``ddm compare`` prints: one line per cell, the shift, the changed verdicts, a verdict line."""
    lines = [f"{'cell':<44} {name_a[:12]:>12} {name_b[:12]:>12} {'B - A':>10} {'(B-A)/std':>10}"]
    for key, a, b, diff, z, flagged in c.rows:
        cell = " ".join(str(k) for k in key)
        mark = "  <-- " + ("only in one run" if a is None or b is None else
                           f"moved more than {c.tolerance:g} std" if z is not None else
                           f"moved more than {c.rel_tolerance:.0%} (no std)") if flagged else ""
        lines.append(f"{cell:<44} {_fmt(a and a.mean):>12} {_fmt(b and b.mean):>12} {_fmt(diff):>10} "
                     f"{_fmt(z, '+.2f'):>10}{mark}")
    for group, mean, n, flagged in c.shifts:
        lines.append(f"mean move of {' '.join(group)} ({n} cells with a std): {mean:+.2f} std (tolerance "
                     f"{c.shift_tolerance:g})" + ("  <-- a systematic shift" if flagged else ""))
    if c.verdicts:
        lines.append("verdicts that changed:")
        lines += [f"  {what}: {va} -> {vb}" for what, va, vb in c.verdicts]
    else:
        lines.append("verdicts: none changed")
    n = sum(r[-1] for r in c.rows)
    shifted = sum(s[-1] for s in c.shifts)
    lines.append("FLAGGED: " + ", ".join(x for x in (f"{n} cell(s)" if n else "", f"{shifted} table(s) shifted" if shifted else "",
                                                       f"{len(c.verdicts)} verdict(s)" if c.verdicts else "") if x)
                 if c.flagged else "same evidence: no cell beyond its tolerance, no verdict changed")
    return "\n".join(lines)


def to_json(c: Comparison) -> str:
    """The comparison as JSON (``ddm compare --json``)."""
    rows = [{"cell": list(key), "a": a and a.mean, "b": b and b.mean, "diff": diff, "z": z, "flagged": flagged}
            for key, a, b, diff, z, flagged in c.rows]
    shifts = [{"table": list(g), "mean": m, "cells": n, "flagged": f} for g, m, n, f in c.shifts]
    return json.dumps({"cells": rows, "shifts": shifts,
                       "verdicts": [list(v) for v in c.verdicts], "flagged": c.flagged}, indent=1)
