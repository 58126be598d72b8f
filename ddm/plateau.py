"""Is a trained network on its plateau? The check behind a table's "not converged" (the stats step).

A network is on its plateau when, at every NFE of its convergence record (``ddm convergence``:
the FID of the EMA weights of each kept checkpoint, ``results/convergence/<dataset>/<method>.json``),
the FIDs of its last two checkpoints differ by less than the sample-set std of its Table 1
cell at that NFE: the spread of FID over repeated sample sets of one network
(``reports/metrics.json``: ``std``, or ``sample_sets.std`` with training-seed replicates). A
difference that sample noise alone explains says that more training would not move the number
measurably; a larger one says it still would, in either direction.

The criterion has a stated margin, so a knife edge is reported as one: when the difference and the
std are within twice ``CPU_REL`` (ddm.stats: how far a number moves when the same run is made on
another CPU, 3 %; each of the two quantities may move by it) of the std of each other, the check
is ``borderline``: the converged run's SDE once differed by 6.587 against a std of 6.579 on one
CPU and passed on another.

Verdicts per method: ``converged``, ``not converged``, ``borderline`` (no NFE fails, one is within
the margin), or ``not checked`` (no convergence record, fewer than two checkpoints, or no
sample-set std: a cell of one sample set).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ddm.stats import CPU_REL

__all__ = ["CONVERGED", "NOT_CONVERGED", "BORDERLINE", "NOT_CHECKED", "plateau_check", "CRITERION"]

CONVERGED, NOT_CONVERGED, BORDERLINE, NOT_CHECKED = "converged", "not converged", "borderline", "not checked"
#: The criterion, as the report states it.
CRITERION = ("the FIDs of the last two checkpoints differ by less than the sample-set std of the network's "
             "Table 1 cell at each NFE of its convergence record; borderline where the difference is within "
             f"{2 * CPU_REL:.0%} of the std (how far the two may move between CPUs)")


def _sample_set_std(cell: Mapping | None) -> float | None:
    if not cell:
        return None
    return (cell.get("sample_sets") or cell).get("std")


def plateau_check(records: Iterable[Mapping], results: Mapping) -> dict[str, dict]:
    """method -> ``{"verdict", "checks": [{"nfe", "steps", "fids", "diff", "std", "ok"}], "reason"}``
    for one dataset's convergence ``records`` (the JSON of ``ddm convergence``) against its
    Table 1 ``results`` (metrics.json's ``datasets/<dataset>/results``)."""
    out = {}
    for rec in records:
        method, checks = rec["method"], []
        for nfe in sorted({int(r["nfe"]) for r in rec["rows"]}):
            rows = sorted((r for r in rec["rows"] if int(r["nfe"]) == nfe), key=lambda r: r["step"])
            std = _sample_set_std(results.get(method, {}).get(str(nfe)))
            if len(rows) < 2 or std is None:
                checks.append({"nfe": nfe, "steps": [r["step"] for r in rows], "ok": None,
                               "reason": "fewer than two checkpoints" if len(rows) < 2 else "no sample-set std"})
                continue
            (a, b) = rows[-2:]
            fids = [float(a["fid"]), float(b["fid"])]
            diff, margin = abs(fids[1] - fids[0]), 2 * CPU_REL * float(std)
            ok = BORDERLINE if abs(diff - float(std)) <= margin else diff < std
            checks.append({"nfe": nfe, "steps": [a["step"], b["step"]], "fids": fids, "diff": diff, "std": float(std),
                           "margin": margin, "ok": ok})
        oks = [c["ok"] for c in checks]
        verdict = (NOT_CONVERGED if False in oks else BORDERLINE if BORDERLINE in oks
                   else CONVERGED if oks and all(o is True for o in oks) else NOT_CHECKED)
        out[method] = {"verdict": verdict, "checks": checks}
    return out
