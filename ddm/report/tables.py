"""The numbers of reports/metrics.json -> LaTeX: reports/tables.tex (Tables 1-5 and the fair-solver
table; ``render_tables``) through the package's jinja2 templates (``template_env``, which ``ddm.claims``
and the PDF report use too): numbers are formatted in Python, the template uses LaTeX-safe
delimiters and StrictUndefined (a missing number fails instead of leaving a blank cell), and the
output is byte-stable (sorted keys, fixed decimals, no dates). The published results shown beside
the measured ones come from a CSV (``PUBLISHED_CSV``, or one's own: ``check_published_csv``).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping

from ddm.report.cells import result_cell
from ddm.report.labels import DATASET_LABELS, latex_escape, method_label
from ddm.report.provenance import provenance_text
from ddm.report.seeds import SEEDS, seed_table
from ddm.report.task_tables import table2, table3
from ddm.resources import PUBLISHED_CSV, TABLES_TEMPLATE
from ddm.stats import CPU_REL

__all__ = ["render_tables", "nonfinite_cells", "check_published_csv", "format_params"]


def template_env():
    """The jinja2 environment of the package's templates (ddm/templates: ``TABLES_TEMPLATE``'s
    folder, loaded through the installed package, not the working directory), with LaTeX-safe
    delimiters."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("ddm", "templates"),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((#", comment_end_string="#))",
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


def nonfinite_cells(metrics: Mapping) -> list[str]:
    """The paths (``datasets/digits/results/ddm/10/mean``) of the numbers of ``metrics`` that the
    tables show (each result's values, mean and std; a task's references) and that are not finite:
    NaN or infinity, which would render as ``nan`` in a table."""
    def results(where: str, by_method) -> list[str]:
        bad = []
        for method, by_nfe in (by_method or {}).items():
            for nfe, res in (by_nfe or {}).items():
                cells = [("mean", res.get("mean")), ("std", res.get("std"))]
                cells += [(f"values[{i}]", v) for i, v in enumerate(res.get("values") or [])]
                bad += [f"{where}/{method}/{nfe}/{k}" for k, v in cells if isinstance(v, float) and not math.isfinite(v)]
        return bad

    bad = []
    for ds, d in (metrics.get("datasets") or {}).items():
        bad += results(f"datasets/{ds}/results", d.get("results"))
    for task, t in ((metrics.get("conditioned") or {}).get("tasks") or {}).items():
        bad += results(f"conditioned/tasks/{task}/results", t.get("results"))
        bad += [f"conditioned/tasks/{task}/references/{k}" for k, v in (t.get("references") or {}).items()
                if isinstance(v, float) and not math.isfinite(v)]
    return bad


def kid_power(kids: list[float]) -> int:
    """The power of ten a table's KIDs are shown at (x 10^power), a multiple of 3 that puts the
    largest in [1, 1000): 10^3 for Inception-scale KIDs (0.001-0.1), other features as they come."""
    top = max(kids, default=0.0)
    return 0 if top <= 0 else -3 * math.floor(math.log10(top) / 3)


def _kid_cell(res: Mapping | None, power: int) -> str:
    """A KID cell, x 10^power: mean (2 decimals) and `` $\\pm$ std`` (3) over the cell's values."""
    kid = (res or {}).get("kid")
    if not kid:
        return "--"
    f = 10.0 ** power
    return result_cell({"mean": f * kid["mean"], "std": None if kid.get("std") is None else f * kid["std"]})


def _run_caption(metrics: Mapping, d: Mapping, methods: list[str]) -> dict:
    """What Table 1's caption says of the run: quick or converged (its training budget, its
    training seeds), what the std is over, the sample-set std beside the training-seed std, and
    which networks are not on their plateau (``ddm.plateau``)."""
    run = metrics.get("run") or {}
    k = run.get("replicates", 1)
    steps = ", ".join(f"{_fmt_int(v)}" for v in sorted(set((run.get("train_steps") or {}).values())))
    budget = f"{steps} training steps per network" if steps else "its training budget"
    if run.get("name", "quick") == "quick":
        text = (f"A quick run ({budget}, {k} training seed{'s' if k > 1 else ''}): the numbers to cite come from "
                "the converged run (README, ``The converged run'').")
    else:
        text = f"The converged run ({budget}, {k} training seeds per method)."
    seeds = [c["n"] for m in methods for c in d["results"][m].values() if c.get("unit") == "training seeds"]
    unit = (f"{max(seeds)} independently trained networks (training seeds), each scored on its own sample set" if seeds
            else "repeated sample sets of one trained network per method, which understates the variance of retraining")
    spread = ""
    if seeds:
        res = d["results"]
        parts = [f"{method_label(m, metrics)} {res[m][n]['sample_sets']['std']:.3f}" for m in methods
                 for n in sorted(res[m], key=int)[:1] if (res[m][n].get("sample_sets") or {}).get("std") is not None]
        spread = ("Std over the sample sets of one network (the first NFE): " + ", ".join(parts) + ".") if parts else ""
    return {"text": text, "unit": unit, "spread": spread, "plateau": plateau_text(metrics, d, methods)}


def plateau_text(metrics: Mapping, d: Mapping, methods: list[str]) -> str:
    """What a caption says of its rows' networks' plateau check (``ddm.plateau``); empty when none was checked."""
    plateau = {m: p for m, p in (d.get("plateau") or {}).items() if m in methods}

    def having(v: str) -> list[str]:
        return [method_label(m, metrics) for m in methods if plateau.get(m, {}).get("verdict") == v]

    if not plateau:
        return ""
    stale, edge, unchecked = having("not converged"), having("borderline"), having("not checked")
    verdict = (f"Not converged (the FIDs of its last two checkpoints differ by more than the sample-set std): "
               f"{', '.join(stale)}." if stale else "" if unchecked or edge else "Every network is on its plateau.")
    verdict += (f" Borderline (that difference within {2 * CPU_REL:.0%} of the std): "
                f"{', '.join(edge)}.").replace("%", r"\%") if edge else ""
    verdict += f" Plateau not checked (no convergence record): {', '.join(unchecked)}." if unchecked else ""
    return verdict.strip()


def check_published_csv(path=None) -> Path:
    """A published-results CSV (default: the package's ``PUBLISHED_CSV``) checked before any work:
    a non-empty file with the columns the tables read; an ``InputError`` naming it otherwise."""
    from ddm.io import InputError, check_input_file

    path = PUBLISHED_CSV if path is None else path
    p = check_input_file(path, "published results file")
    with open(p, newline="") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in ("table", "dataset", "method", "params", "nfe", "value") if c not in header]
    if missing:
        raise InputError(f"published results file {path} lacks the columns {missing}: add them (the package's "
                         f"own file {PUBLISHED_CSV} shows the format)")
    return p


def _published(path) -> list[dict]:
    """The rows of a published-results CSV (a path or ``PUBLISHED_CSV``, the package's own)."""
    if not path.is_file():
        raise FileNotFoundError(f"published results CSV not found: {path} (the package's own is {PUBLISHED_CSV})")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_tables(metrics: Mapping, published_csv: Path = PUBLISHED_CSV) -> str:
    """reports/tables.tex: Table 1 (measured, with markers; reported peers marked as such, from
    ``published_csv``: by default the package's ``PUBLISHED_CSV``), Table 4 and Table 5 when
    their ablations were run."""
    published = _published(Path(published_csv) if isinstance(published_csv, str) else published_csv)
    datasets = [_dataset_tables(metrics, ds, d, published) for ds, d in sorted(metrics["datasets"].items())]
    cond = metrics.get("conditioned")
    return template_env().get_template(TABLES_TEMPLATE.name).render(
        datasets=datasets, preset=metrics["preset"], ht=metrics["ht"], provenance=provenance_text(metrics.get("provenance")),
        table2=table2(cond, published) if cond else None, table3=table3(cond, published) if cond else None)


def _dataset_tables(metrics: Mapping, ds: str, d: Mapping, published: list[dict]) -> dict:
    """One dataset's part of reports/tables.tex: Table 1 (measured and reported rows, KID), its
    caption's facts, Tables 4 and 5 and the fair-solver table."""
    res = d["results"]
    t1_methods = [m for m in metrics["table1_methods"] if m in res]
    nfes = sorted({int(n) for m in t1_methods for n in res[m]})
    rows = []
    for m in t1_methods:
        cells = []
        for n in nfes:
            col = d["table1"].get(str(n), {})
            marker = col.get("marker") if col.get("best") == m else None
            cells.append(result_cell(res[m].get(str(n)), marker))
        size = d.get("params", {}).get(m)
        rows.append({"label": method_label(m, metrics), "cells": cells,
                     "params": format_params(size) if size else "--"})
    samples = {n: next(res[m][str(n)]["num_samples"] for m in t1_methods if str(n) in res[m]) for n in nfes}
    repeats = {n: max(res[m][str(n)]["n"] for m in t1_methods if str(n) in res[m]) for n in nfes}
    kids = [abs(c["kid"]["mean"]) for m in t1_methods for c in res[m].values() if c.get("kid")]
    power = kid_power(kids)
    kid_rows = [{"label": method_label(m, metrics), "cells": [_kid_cell(res[m].get(str(n)), power) for n in nfes]}
                for m in t1_methods] if kids else []
    t4, t4_nfes, t5 = _ablation_tables(metrics, res)
    return {
        "solver": _solver_table(d, res),
        "name": DATASET_LABELS.get(ds, ds), "nfes": nfes, "rows": rows, "reported": _reported_rows(published, ds, nfes),
        "samples": ", ".join(f"NFE {n}: {_fmt_int(samples[n])} samples $\\times$ {repeats[n]}" for n in nfes),
        "kid_rows": kid_rows, "kid_scale": f" ($\\times 10^{{{power}}}$)" if power else "",
        "unequal": len(set(samples.values())) > 1,
        "run": _run_caption(metrics, d, t1_methods),
        "extractor": latex_escape(d["extractor"]), "reference": latex_escape(d["reference"]),
        "samplers": "; ".join(d.get("samplers", {}).values()),
        "table4": t4, "t4_nfes": t4_nfes, "table5": t5,
        "t4_note": ablation_unit(metrics, res, "table4") + shared_note(metrics, "table4"),
        "t5_note": ablation_unit(metrics, res, "table5") + shared_note(metrics, "table5"),
        "ablation_plateau": plateau_text(metrics, d, [m for m in res if m not in t1_methods]),
        "seeds": seed_table(metrics, d),
    }


def _reported_rows(published: list[dict], ds: str, nfes: list[int]) -> list[dict]:
    """Table 1's reported peers of dataset ``ds`` (published.csv), at the measured NFEs."""
    reported = defaultdict(dict)
    params_of = {}
    for r in published:
        if r["table"] == "1" and r["dataset"] == ds:
            reported[r["method"]][int(r["nfe"])] = float(r["value"])
            params_of[r["method"]] = r["params"]
    return [{"label": latex_escape(m), "params": latex_escape(params_of[m]) or "--",
             "cells": [f"{v[n]:.2f}" if n in v else "--" for n in nfes]} for m, v in reported.items()]


def _solver_table(d: Mapping, res: Mapping) -> dict | None:
    """The fair-solver table of a dataset (its ``solver_table``, with its markers), or None."""
    if "solver_table" not in d:
        return None
    st = d["solver_table"]
    s_nfes = sorted(int(n) for n in st["columns"])

    def marker(m: str, n: int) -> str | None:
        column = st["columns"][str(n)]
        return column["marker"] if column["best"] == m else None

    return {"nfes": s_nfes, "rows": [{"label": st["labels"][m], "cells": [result_cell(res[m].get(str(n)), marker(m, n))
                                                                        for n in s_nfes]} for m in st["rows"]]}


def _ablation_tables(metrics: Mapping, res: Mapping) -> tuple[list[dict], list[int], list[dict]]:
    """Table 4 (rows, NFE columns) and Table 5 (rows) of one dataset from metrics.json's
    ``ablation_rows`` (``ddm.roles``): Table 4 has the measured rows; Table 5 all its rows
    ("--" where not measured) once one of its ablations was measured; 10-step FID as the paper's."""
    rows = metrics.get("ablation_rows", {})
    t4_rows = [r for r in rows.get("table4", []) if r["method"] in res]
    t4_nfes = sorted({n for r in t4_rows for n in _nfes(res, r["method"])})
    shared = metrics.get("shared_networks", {})
    dagger = {m: r"$^\dagger$" if m in shared else "" for m in res}
    t4 = [{"label": r["label"] + dagger[r["method"]], "cells": [result_cell(res[r["method"]].get(str(n))) for n in t4_nfes]}
          for r in t4_rows]
    t5_rows = rows.get("table5", [])
    measured = any(r["method"] in res for r in t5_rows if r["method"] not in metrics["table1_methods"])
    t5 = [{"group": r["group"], "label": r["label"] + dagger.get(r["method"], ""),
           "cell": result_cell(res[r["method"]].get("10")) if r["method"] in res else "--"} for r in t5_rows] if measured else []
    return t4, t4_nfes, t5


def ablation_unit(metrics: Mapping, res: Mapping, table: str) -> str:
    """What the std of Table 4's or 5's cells is over (``ddm.replicates``): the training seeds where
    its rows have them (``replicates: K`` with ablations), else the sample sets of each row's one
    network; empty when no cell has a std."""
    methods = [r["method"] for r in (metrics.get("ablation_rows") or {}).get(table, []) if r["method"] in res]
    cells = [c for m in methods for c in res[m].values() if c.get("std") is not None]
    if not cells:
        return ""
    seeds = [c["n"] for c in cells if c.get("unit") == SEEDS]
    if len(seeds) == len(cells):
        return rf" Mean $\pm$ std over {max(seeds)} training seeds a row, each network scored on its own sample set."
    if seeds:
        return (rf" Mean $\pm$ std over training seeds ({max(seeds)} networks) where a row has them, else over "
                "the sample sets of its one network.")
    return r" Mean $\pm$ std over the sample sets of each row's one network, which understates the variance of retraining."


def shared_note(metrics: Mapping, table: str) -> str:
    """Table 4's or 5's caption note on its rows that sample another row's network (``shared_networks``:
    the same training config, trained once; ``ddm.config.training_twins``); empty when none does."""
    shared = metrics.get("shared_networks", {})
    rows = [r for r in (metrics.get("ablation_rows") or {}).get(table, []) if r["method"] in shared]
    if not rows:
        return ""
    pairs = "; ".join(f"{r['label']}: the network of {method_label(shared[r['method']], metrics)}" for r in rows)
    return (r" $^\dagger$: the same training config as another row's, so one network, trained once and sampled "
            f"for both rows ({pairs}).")


def format_params(n: int) -> str:
    """A parameter count as Table 1 writes it: 175M, 1.6M, 0.27M."""
    m = n / 1e6
    return f"{m:.0f}M" if m >= 10 else f"{m:.1f}M" if m >= 1 else f"{m:.2f}M"


def _nfes(res: Mapping, method: str) -> list[int]:
    return sorted(int(n) for n in res.get(method, {}))
