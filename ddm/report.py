"""Metrics -> statistics -> LaTeX tables and figures (Tables 1, 4, 5; Fig. 3; FID vs NFE).

Metric files -> tidy pandas table, one row per sample set (``metric_records``; reports/metrics.csv,
``records_csv``) -> mean +- std per group (``summarize_records``) and markers as JSON (``collect``;
reports/metrics.json) -> jinja2 template (``render_tables``): numbers are formatted
in Python, the template uses LaTeX-safe delimiters and StrictUndefined (a missing number fails
instead of leaving a blank cell), and the output is byte-stable (sorted keys, fixed decimals,
no dates).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import torch

from ddm.config import all_methods, model_of
from ddm.registry import GRIDS, SAMPLERS
from ddm.io import utc_timestamp
from ddm.resources import PUBLISHED_CSV, TABLES_TEMPLATE
from ddm.roles import table_rows
from ddm.stats import mark_best, summarize

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PUBLISHED_CSV", "TABLES_TEMPLATE", "RECORD_COLUMNS", "metric_records", "records_csv", "read_records_csv",
           "summarize_records", "collect", "collect_conditioned", "render_tables", "task_figure", "fid_plot", "sample_grid", "fig3_plot", "convergence_plot", "format_params", "METHOD_LABELS",
           "method_label", "nonfinite_cells"]

#: Table 1 labels of the methods this project trains, by their params.yaml names; a method's own
#: ``label:`` in params.yaml comes first (:func:`method_label`), so a renamed or new entry keeps one.
METHOD_LABELS = {"ddm": "DDM (ours)", "ddpm": "DDPM (VP-SDE, EM)", "sde": "SDE (VE-SDE, EM)",
                 "ddpm_x0": "DDPM + $x_0$ branch"}


def method_label(method: str, metrics: Mapping | None = None, *, latex: bool = True) -> str:
    """A Table 1 method's row label: its ``label:`` in params.yaml (``method_labels`` of
    reports/metrics.json), else :data:`METHOD_LABELS`, else its name (LaTeX-escaped if ``latex``)."""
    own = (metrics or {}).get("method_labels", {}).get(method)
    return own or METHOD_LABELS.get(method) or (latex_escape(method) if latex else method)


#: Final steps beyond the paper (the paper's own needs no label).
FINAL_STEP_LABELS = {"x0_head": "last step: $x_0$ head", "denoise": "last step: $x_0$ estimate"}


def solver_label(params: Mapping, method: str) -> str:
    """'DDM, DPM-Solver++(2M), uniform lambda' for the fair-solver table."""
    entry = all_methods(params)[method]
    model = model_of(params, method)
    base = {"ddm": "DDM", "ddpm": "DDPM", "sde": "SDE"}.get(model, latex_escape(model))
    grid = GRIDS.info(entry["grid"])["label"] or latex_escape(entry["grid"])  # labels: ddm.sampling, ddm.baselines
    if "%g" in grid:
        grid = grid % entry.get("rho", 2.0)
    label = f"{base}, {SAMPLERS.info(entry['sampler'])['label'] or latex_escape(entry['sampler'])}, {grid}"
    final = FINAL_STEP_LABELS.get(entry.get("final_step", "paper"))
    label += f", {final}" if final else ""
    if entry.get("denoiser") == "posterior_mean":
        label += ", no network error (exact posterior mean of the training set)"
    return label


#: reports/metrics.csv (``ddm stats --csv``): the tidy table of the metric files, one row per
#: sample set, these columns in this order (a field a file lacks, such as the ``computed_at`` of an
#: older ``ddm evaluate``, is an empty cell).
RECORD_COLUMNS = ("dataset", "method", "nfe", "repeat", "fid", "num_samples", "extractor", "reference",
                  "weights_sha256", "computed_at")
#: The columns that name a sample set (the table's sort order), and those of a group of repeats.
RECORD_KEYS = ("dataset", "method", "nfe", "repeat")
GROUP_KEYS = ("dataset", "method", "nfe")
_RECORD_DTYPES = {"nfe": "int64", "repeat": "int64", "fid": "float64", "num_samples": "int64"}


def metric_records(paths: Iterable[Path]) -> pd.DataFrame:
    """The per-sample-set metric files of ``ddm evaluate`` as a tidy pandas table: one row per
    file, the columns RECORD_COLUMNS, rows sorted by RECORD_KEYS (stable: files with equal keys keep
    the order of their sorted paths). Its index is the file's position in sorted path order."""
    import pandas as pd

    rows = []
    for p in sorted(paths):
        with open(p) as f:
            r = json.load(f)
        rows.append([r.get(c) for c in RECORD_COLUMNS])
    table = pd.DataFrame(rows, columns=list(RECORD_COLUMNS)).astype(_RECORD_DTYPES)
    return table.sort_values(list(RECORD_KEYS), kind="stable")


def records_csv(records: pd.DataFrame) -> str:
    """reports/metrics.csv's text: RECORD_COLUMNS in that order, rows sorted by RECORD_KEYS, no
    index, FIDs as ``repr`` (the shortest text that reads back as the same float), "\\n" lines."""
    table = records.loc[:, list(RECORD_COLUMNS)].sort_values(list(RECORD_KEYS), kind="stable")
    table = table.assign(fid=table["fid"].map(float.__repr__))
    return table.to_csv(index=False, lineterminator="\n")


def read_records_csv(path: str | Path) -> pd.DataFrame:
    """reports/metrics.csv (``records_csv``) back as the table of ``metric_records`` (text columns
    as text, e.g. a digest of digits only; empty cells as missing values; index 0, 1, ...)."""
    import pandas as pd

    text = {c: "str" for c in RECORD_COLUMNS if c not in _RECORD_DTYPES}
    return pd.read_csv(path, dtype={**text, **_RECORD_DTYPES}, keep_default_na=False, na_values=[""])


def summarize_records(records: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, NFE) of ``metric_records``, sorted: the FIDs in repeat order
    (``values``), their ``mean``, ``std`` (ddof 1; NaN for one repeat), ``n`` and the first
    repeat's ``num_samples``. Mean and std are ``ddm.stats.summarize``'s (numpy), not pandas'
    own group reductions, which sum in another order and can differ in the last bit."""
    table = records.sort_values(list(RECORD_KEYS), kind="stable")
    fid = table.groupby(list(GROUP_KEYS), sort=True)["fid"]
    return fid.agg(values=lambda s: s.tolist(), mean=lambda s: summarize(s)["mean"],
                   std=lambda s: summarize(s)["std"], n="size").join(
        table.groupby(list(GROUP_KEYS), sort=True)["num_samples"].first())


def _markers(results: Mapping, rows: list[str], lower_is_better: bool = True) -> dict:
    """Per NFE column: best vs second best of ``rows`` (Table 1's markers)."""
    columns = {}
    for nfe in sorted({int(n) for m in rows for n in results[m]}):
        group = {m: results[m][str(nfe)]["values"] for m in rows if str(nfe) in results[m]}
        mb = mark_best(group, lower_is_better=lower_is_better)
        columns[str(nfe)] = {k: mb[k] for k in ("best", "second", "marker", "p", "t", "test", "reason")}
    return columns


def _solver_table(params: Mapping, results: Mapping) -> dict | None:
    """The fair-solver table of one dataset (None when no solver variant was measured)."""
    variants = [m for m in params["solver_methods"] if m in results]
    if not variants:
        return None
    nfes = {n for m in variants for n in results[m]}
    base = [m for m in sorted({model_of(params, v) for v in variants}) if m in results]
    trimmed = {m: {n: v for n, v in results[m].items() if n in nfes} for m in base + variants}
    rows = base + variants
    # the ceiling rows (no network error) are a reference, not a contender for the markers
    ceiling = [m for m in variants if params["solver_methods"][m].get("denoiser") == "posterior_mean"]
    trained = [m for m in rows if m not in ceiling]
    return {"rows": trained + ceiling, "ceiling": ceiling, "labels": {m: solver_label(params, m) for m in rows},
            "columns": _markers(trimmed, trained)}


def collect(paths: Iterable[Path] | pd.DataFrame, params: Mapping, model_params: Mapping | None = None) -> dict:
    """Per-sample-set FID files (``ddm evaluate``; or their table, ``metric_records``) -> mean +-
    std per (dataset, method, NFE) (``summarize_records``) and Table 1's markers per column (best
    vs second best of the trained Table 1 methods), and the rows of Tables 4 and 5 by the methods'
    roles (``ablation_rows``, ``ddm.roles.table_rows``).
    ``model_params``: dataset -> method -> parameter count of the trained model (Table 1's Param)."""
    import pandas as pd

    records = paths if isinstance(paths, pd.DataFrame) else metric_records(paths)
    # a dataset's extractor and reference: those of its first file in sorted path order
    info = records.sort_index(kind="stable").groupby("dataset", sort=True)[["extractor", "reference"]].first()
    by_dataset: dict = defaultdict(lambda: defaultdict(dict))
    for (ds, m, nfe), s in summarize_records(records).to_dict("index").items():
        by_dataset[ds][m][str(nfe)] = {"values": s["values"], "mean": s["mean"], "n": s["n"],
                                       "std": s["std"] if s["n"] > 1 else None, "num_samples": s["num_samples"]}
    out = {"preset": params["preset"], "ht": params["ht"], "table1_methods": list(params["methods"]),
           "ablation_rows": table_rows(params), "datasets": {}}
    own = {m: e["label"] for m, e in params["methods"].items() if e.get("label")}
    if own:
        out["method_labels"] = own
    for ds, results in sorted(by_dataset.items()):
        results = {m: dict(by_nfe) for m, by_nfe in results.items()}
        t1_methods = [m for m in params["methods"] if m in results]
        entry = {**info.loc[ds].to_dict(), "results": results, "table1": _markers(results, t1_methods),
                 "samplers": {m: solver_label(params, m) for m in t1_methods},
                 "params": dict(sorted((model_params or {}).get(ds, {}).items()))}
        solver = _solver_table(params, results)
        if solver:
            entry["solver_table"] = solver
        out["datasets"][ds] = entry
    return out


# -- conditioned generation (Tables 2 and 3) ------------------------------------------------
#: Row labels of the conditioned methods (a ``label:`` in params.yaml replaces them).
TASK_METHOD_LABELS = {"ddm": "DDM", "ddpm": "DDPM"}
#: Per task: its column title, metric label, decimals, and the paper's dataset (published.csv).
TASK_COLUMNS = {
    "saliency": {"title": "Saliency detection", "metric": r"MAE$\downarrow$", "digits": 4, "paper": "duts"},
    "super_resolution": {"title": "Super-resolution", "metric": r"PSNR$\uparrow$", "digits": 2, "paper": "div2k"},
    "inpainting": {"title": "Image inpainting", "metric": r"FID$\downarrow$", "digits": 2, "paper": "celebahq256"},
}
#: Labels of the trivial references (``ddm.conditioned.task_references``).
REFERENCE_LABELS = {"all_background": "All background", "bicubic": "Bicubic", "mean_fill": "Mean-colour fill",
                    "test_images": "Test images (real)"}


def _task_results(metric_paths: Iterable[Path]) -> dict:
    """task -> method -> NFE -> mean +- std of the per-sample-set files of ``ddm evaluate-task``."""
    values: dict = defaultdict(list)
    for p in sorted(Path(p) for p in metric_paths):
        with open(p) as f:
            r = json.load(f)
        values[r["task"], r["method"], int(r["nfe"])].append((int(r["repeat"]), float(r["value"]), r["num_samples"]))
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (task, method, nfe), rows in sorted(values.items()):
        vals = [v for _, v, _ in sorted(rows)]
        s = summarize(vals)
        out[task][method][str(nfe)] = {"values": vals, "mean": s["mean"], "std": s["std"] if s["n"] > 1 else None,
                                       "n": s["n"], "num_samples": rows[0][2]}
    return {t: dict(by_method) for t, by_method in out.items()}


def collect_conditioned(metric_paths: Iterable[Path], reference_paths: Iterable[Path], params: Mapping,
                        autoencoder_paths: Iterable[Path] = ()) -> dict:
    """The ``conditioned`` section of reports/metrics.json (Tables 2 and 3): per task its metric,
    mean +- std per (method, NFE) over the repeated sample sets, Table 1's markers per NFE column
    (best vs second best of the measured methods; higher is better for PSNR) and the trivial
    references; the methods' row labels and the NFEs of the two tables. A latent task (§5.1)
    also gets ``latent``: its autoencoder's factor, latent channels and test-split reconstruction
    PSNR (``autoencoder_paths``: the metric files of ``ddm train-autoencoder``)."""
    from ddm.config import TASKS, conditioned_block

    block = conditioned_block(params) or {}
    results = _task_results(metric_paths)
    methods = [m for m in params.get("conditioned_methods", {}) if any(m in r for r in results.values())]
    tasks = {}
    for task in [t for t in TASKS if t in results]:
        res = results[task]
        rows = [m for m in methods if m in res]
        t = block.get("tasks", {}).get(task, {})
        tasks[task] = {"metric": TASKS[task]["metric"], "higher_is_better": TASKS[task]["higher_is_better"],
                       "size": t.get("size"), "scale": t.get("scale", 4) if task == "super_resolution" else None,
                       "results": res, "markers": _markers(res, rows, not TASKS[task]["higher_is_better"]),
                       "references": {}}
    for p in sorted(Path(p) for p in reference_paths):
        with open(p) as f:
            r = json.load(f)
        if r["task"] in tasks:
            tasks[r["task"]]["references"] = dict(r["references"])
    for p in sorted(Path(p) for p in autoencoder_paths):
        with open(p) as f:
            r = json.load(f)
        if r["task"] in tasks:
            tasks[r["task"]]["latent"] = {k: r[k] for k in ("psnr", "factor", "z_channels", "num_samples")}
    entries = params.get("conditioned_methods", {})
    nfes = sorted({int(n) for r in results.values() for by in r.values() for n in by})
    return {"methods": methods, "labels": {m: entries[m].get("label") or TASK_METHOD_LABELS.get(m, latex_escape(m))
                                           for m in methods},
            "table2_nfe": block.get("table2", {}).get("nfe", nfes), "table3_nfe": block.get("table3", {}).get("nfe", nfes),
            "tasks": tasks}


# -- LaTeX ----------------------------------------------------------------------------------
def _env():
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


def _cell(res: Mapping | None, marker: str | None = None, digits: int = 2) -> str:
    """``mean`` (``digits`` decimals) with Table 1's marker and `` $\\pm$ std`` (one decimal more)."""
    if res is None:
        return "--"
    if not all(math.isfinite(v) for v in (res["mean"], res.get("std") or 0.0)):
        raise ValueError(f"a table cell of mean {res['mean']} and std {res.get('std')} is not finite")
    text = f"{res['mean']:.{digits}f}"
    if marker == "significant":
        text = r"\textbf{" + text + r"}\sigmark"
    elif marker == "not_significant":
        text = r"\textbf{" + text + r"}\nsmark"
    if res.get("std") is not None:
        text += rf" $\pm$ {res['std']:.{digits + 1}f}"
    return text


def _published(path) -> list[dict]:
    """The rows of a published-results CSV (a path or ``PUBLISHED_CSV``, the package's own)."""
    if not path.is_file():
        raise FileNotFoundError(f"published results CSV not found: {path} (the package's own is {PUBLISHED_CSV})")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


DATASET_LABELS = {"digits": "Digits (8$\\times$8)", "cifar10": "CIFAR-10", "celebahq256": "CelebA-HQ-256"}


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_tables(metrics: Mapping, published_csv: Path = PUBLISHED_CSV) -> str:
    """reports/tables.tex: Table 1 (measured, with markers; reported peers marked as such, from
    ``published_csv``: by default the package's ``PUBLISHED_CSV``), Table 4 and Table 5 when
    their ablations were run."""
    published = _published(Path(published_csv) if isinstance(published_csv, str) else published_csv)
    datasets = []
    for ds, d in sorted(metrics["datasets"].items()):
        res = d["results"]
        t1_methods = [m for m in metrics["table1_methods"] if m in res]
        nfes = sorted({int(n) for m in t1_methods for n in res[m]})
        rows = []
        for m in t1_methods:
            cells = []
            for n in nfes:
                col = d["table1"].get(str(n), {})
                marker = col.get("marker") if col.get("best") == m else None
                cells.append(_cell(res[m].get(str(n)), marker))
            size = d.get("params", {}).get(m)
            rows.append({"label": method_label(m, metrics), "cells": cells,
                         "params": format_params(size) if size else "--"})
        reported = defaultdict(dict)
        params_of = {}
        for r in published:
            if r["table"] == "1" and r["dataset"] == ds:
                reported[r["method"]][int(r["nfe"])] = float(r["value"])
                params_of[r["method"]] = r["params"]
        reported_rows = [{"label": latex_escape(m), "params": latex_escape(params_of[m]) or "--",
                          "cells": [f"{v[n]:.2f}" if n in v else "--" for n in nfes]} for m, v in reported.items()]
        samples = {n: next(res[m][str(n)]["num_samples"] for m in t1_methods if str(n) in res[m]) for n in nfes}
        repeats = {n: max(res[m][str(n)]["n"] for m in t1_methods if str(n) in res[m]) for n in nfes}
        t4, t4_nfes, t5 = _ablation_tables(metrics, res)
        solver = None
        if "solver_table" in d:
            st = d["solver_table"]
            s_nfes = sorted(int(n) for n in st["columns"])
            solver = {"nfes": s_nfes, "rows": [
                {"label": st["labels"][m], "cells": [
                    _cell(res[m].get(str(n)), st["columns"][str(n)]["marker"] if st["columns"][str(n)]["best"] == m else None)
                    for n in s_nfes]} for m in st["rows"]]}
        datasets.append({
            "solver": solver,
            "name": DATASET_LABELS.get(ds, ds), "nfes": nfes, "rows": rows, "reported": reported_rows,
            "samples": ", ".join(f"NFE {n}: {_fmt_int(samples[n])} samples $\\times$ {repeats[n]}" for n in nfes),
            "extractor": latex_escape(d["extractor"]), "reference": latex_escape(d["reference"]),
            "samplers": "; ".join(d.get("samplers", {}).values()),
            "table4": t4, "t4_nfes": t4_nfes, "table5": t5,
        })
    cond = metrics.get("conditioned")
    return _env().get_template(TABLES_TEMPLATE.name).render(
        datasets=datasets, preset=metrics["preset"], ht=metrics["ht"], provenance=provenance_text(metrics.get("provenance")),
        table2=_table2(cond, published) if cond else None, table3=_table3(cond, published) if cond else None)


def _ablation_tables(metrics: Mapping, res: Mapping) -> tuple[list[dict], list[int], list[dict]]:
    """Table 4 (rows, NFE columns) and Table 5 (rows) of one dataset from metrics.json's
    ``ablation_rows`` (``ddm.roles``): Table 4 has the measured rows; Table 5 all its rows
    ("--" where not measured) once one of its ablations was measured; 10-step FID as the paper's."""
    rows = metrics.get("ablation_rows", {})
    t4_rows = [r for r in rows.get("table4", []) if r["method"] in res]
    t4_nfes = sorted({n for r in t4_rows for n in _nfes(res, r["method"])})
    t4 = [{"label": r["label"], "cells": [_cell(res[r["method"]].get(str(n))) for n in t4_nfes]} for r in t4_rows]
    t5_rows = rows.get("table5", [])
    measured = any(r["method"] in res for r in t5_rows if r["method"] not in metrics["table1_methods"])
    t5 = [{"group": r["group"], "label": r["label"], "cell": _cell(res[r["method"]].get("10")) if r["method"] in res
           else "--"} for r in t5_rows] if measured else []
    return t4, t4_nfes, t5


def _task_order(cond: Mapping) -> list[str]:
    """The measured tasks in the paper's column order (saliency, super-resolution, inpainting)."""
    return [t for t in TASK_COLUMNS if t in cond["tasks"]]


def _task_cell(cond: Mapping, task: str, method: str, nfe: int) -> str:
    t = cond["tasks"][task]
    column = t["markers"].get(str(nfe), {})
    marker = column.get("marker") if column.get("best") == method else None
    return _cell(t["results"].get(method, {}).get(str(nfe)), marker, TASK_COLUMNS[task]["digits"])


def _reported(published: list[dict], table: str, task: str) -> list[tuple[str, int, float]]:
    """(method, NFE, value) of the paper's rows of ``table`` on the task's dataset (published.csv)."""
    ds = TASK_COLUMNS[task]["paper"]
    return [(r["method"], int(r["nfe"]), float(r["value"])) for r in published if r["table"] == table and r["dataset"] == ds]


def _table2(cond: Mapping, published: list[dict]) -> dict:
    """Table 2: one (method, value) column pair per task; rows: the measured methods at Table 2's
    NFEs, the trivial references, the paper's reported rows (its DDPM/DDM and the state of the art)."""
    from itertools import zip_longest

    tasks = _task_order(cond)
    digits = {t: TASK_COLUMNS[t]["digits"] for t in tasks}
    measured = [[(f"{cond['labels'][m]}-{n} step", _task_cell(cond, t, m, n)) for t in tasks]
                for m in cond["methods"] for n in cond["table2_nfe"]]
    refs = [[(REFERENCE_LABELS.get(k, latex_escape(k)), f"{v:.{digits[t]}f}")
             for k, v in cond["tasks"][t]["references"].items()] for t in tasks]
    reported = [[(latex_escape(m) + (f"-{n} step (paper)" if n else "") + r"\reported{}", f"{v:.{digits[t]}f}")
                 for m, n, v in _reported(published, "2", t)] for t in tasks]
    blank = ("", "")

    def pad(columns):
        return [list(row) for row in zip_longest(*columns, fillvalue=blank)]

    return {"tasks": [{"title": TASK_COLUMNS[t]["title"], "metric": TASK_COLUMNS[t]["metric"]} for t in tasks],
            "measured": measured, "references": pad(refs), "reported": pad(reported), "caption": _task_caption(cond)}


def _table3(cond: Mapping, published: list[dict]) -> dict:
    """Table 3: the measured methods (and the paper's DDPM/DDM rows) at Table 3's NFEs, per task."""
    tasks, nfes = _task_order(cond), cond["table3_nfe"]
    rows = [{"label": cond["labels"][m], "cells": [_task_cell(cond, t, m, n) for t in tasks for n in nfes]}
            for m in cond["methods"]]
    paper: dict = defaultdict(dict)
    for t in tasks:
        for m, n, v in _reported(published, "3", t):
            paper[m][t, n] = f"{v:.{TASK_COLUMNS[t]['digits']}f}"
    reported = [{"label": latex_escape(m) + r" (paper)\reported{}", "cells": [cells.get((t, n), "--") for t in tasks for n in nfes]}
                for m, cells in paper.items() if {(t, n) for t in tasks for n in nfes} & set(cells)]
    return {"tasks": [{"title": TASK_COLUMNS[t]["title"], "metric": TASK_COLUMNS[t]["metric"]} for t in tasks],
            "nfes": nfes, "rows": rows, "reported": reported}


def _task_caption(cond: Mapping) -> str:
    """What the embedded tasks are and how they are scored, for Table 2's caption."""
    parts = []
    for task, t in ((k, cond["tasks"][k]) for k in _task_order(cond)):
        n = next(iter(next(iter(t["results"].values())).values()))["num_samples"]
        size = f"{t['size']}$\\times${t['size']}, " if t.get("size") else ""
        parts.append({
            "saliency": f"saliency detection MAE$\\downarrow$ (shapes and digits on textures, {size}{n} test images; "
                        "stands in for DUTS)",
            "super_resolution": f"$\\times${t.get('scale') or 4} super-resolution PSNR$\\uparrow$ (Y channel, "
                                f"{t.get('scale') or 4}-pixel border cropped; photo patches, {size}{n} test patches; "
                                "stands in for DIV2K)",
            "inpainting": f"inpainting FID$\\downarrow$ (digits with LaMa-distributed holes, {size}{n} test digits, "
                          "digits-classifier features against the training digits; stands in for CelebA-HQ)",
        }[task])
    return "; ".join(parts) + _latent_caption(cond)


def _latent_caption(cond: Mapping) -> str:
    """Table 2's caption sentence on the tasks that run in latent space (§5.1: a KL autoencoder of
    factor 4, latent diffusion): factor, latent channels and test-split reconstruction PSNR."""
    parts = [f"{TASK_COLUMNS[k]['title'].lower()} runs in the latent space of a KL-f{t['latent']['factor']} "
             f"autoencoder ({t['latent']['z_channels']} latent channels), reconstruction PSNR "
             f"{t['latent']['psnr']:.1f}~dB on the test split"
             for k, t in ((k, cond["tasks"][k]) for k in _task_order(cond)) if t.get("latent")]
    return ". Latent diffusion (as the paper's >256-pixel tasks): " + "; ".join(parts) if parts else ""


def format_params(n: int) -> str:
    """A parameter count as Table 1 writes it: 175M, 1.6M, 0.27M."""
    m = n / 1e6
    return f"{m:.0f}M" if m >= 10 else f"{m:.1f}M" if m >= 1 else f"{m:.2f}M"


def _nfes(res: Mapping, method: str) -> list[int]:
    return sorted(int(n) for n in res.get(method, {}))


# -- figures --------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, **kw) -> Path:
    from ddm.io import atomic_write

    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=120, **kw))
    _pyplot().close(fig)
    return out


def fid_plot(metrics: Mapping, dataset: str, out: Path) -> Path:
    """FID against NFE, one line per method, error bars = std over repeats."""
    plt = _pyplot()
    d = metrics["datasets"][dataset]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, by_nfe in sorted(d["results"].items()):
        xs = sorted(int(n) for n in by_nfe)
        ys = [by_nfe[str(n)]["mean"] for n in xs]
        err = [by_nfe[str(n)]["std"] or 0 for n in xs]
        ax.errorbar(xs, ys, yerr=err, marker="o", label=method_label(m, metrics, latex=False), capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"FID ({d['extractor']})")
    ax.set_title(f"{dataset}: FID against NFE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def tile(x: torch.Tensor, nrow: int, padding: int = 1, pad_value: float = 0) -> torch.Tensor:
    """Images (N, C, H, W) as one (3, H', W') image: rows of ``nrow``, ``padding`` pixels of
    ``pad_value`` around and between them, one channel repeated to three (the layout of
    torchvision's ``make_grid``; here so that a figure job does not import torchvision, seconds
    of start-up)."""
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"tile needs images (N, C, H, W) with N >= 1, got shape {tuple(x.shape)}")
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    n, c, h, w = x.shape
    cols, rows = min(nrow, n), -(-n // min(nrow, n))
    grid = x.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for k in range(n):
        top, left = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = x[k]
    return grid


def sample_grid(samples: Path, title: str, out: Path, n: int = 64) -> Path:
    """The first n samples of a sample file as an 8-wide grid."""
    plt = _pyplot()
    from ddm.io import load_torch

    x = load_torch(samples, "sample file", "ddm sample")[:n]  # its checksum verified
    grid = tile(x, nrow=8, padding=1, pad_value=255)
    fig = plt.figure(figsize=(4, 4))
    plt.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    plt.axis("off")
    plt.title(title, fontsize=9)
    return _save(fig, out, bbox_inches="tight")


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in 1..3 -> float RGB in [0, 1] (grey repeated; 2 channels: the first)."""
    x = x.float() / 255
    return x[:, :1].repeat(1, 3, 1, 1) if x.shape[1] != 3 else x


def task_condition(split: Mapping) -> torch.Tensor:
    """What a task's condition looks like, as RGB in [0, 1]: the composite (saliency), the bicubic
    up-sampled image (super-resolution), the digit with its holes in red (inpainting)."""
    if "mask_uint8" in split:
        return _rgb(split["image_uint8"])
    if "cond_uint8" in split:
        return _rgb(split["cond_uint8"])
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    return torch.where(split["mask"].bool(), red, _rgb(split["image_uint8"]))


def task_figure(split: Mapping, samples: list[torch.Tensor], labels: list[str], out: Path, n: int = 8) -> Path:
    """condition | one column per sample file | target, for the first ``n`` test examples."""
    target = split["mask_uint8"] if "mask_uint8" in split else split["hr_uint8"] if "hr_uint8" in split else split["image_uint8"]
    columns = [task_condition(split)[:n], *[_rgb(x[:n]) for x in samples], _rgb(target[:n])]
    rows = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: example i, then its columns
    grid = tile(rows, nrow=len(columns), padding=1, pad_value=0.5)
    plt = _pyplot()
    names = ["condition", *labels, "target"]
    fig = plt.figure(figsize=(1.1 * len(columns) + 0.5, 1.1 * min(n, len(target)) + 0.6))
    plt.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    width = grid.shape[2] / len(columns)
    plt.xticks([(i + 0.5) * width for i in range(len(columns))], names, fontsize=7, rotation=20)
    plt.yticks([])
    return _save(fig, out, bbox_inches="tight")


@torch.no_grad()
def fig3_plot(fig3_json: Path, out: Path) -> Path:
    """Fig. 3 (left): MSE of the predicted x0 against reverse time, per model."""
    plt = _pyplot()
    with open(fig3_json) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, c in sorted(data["curves"].items()):
        ax.plot(c["t"], c["mse"], label=METHOD_LABELS.get(name, name))
    ax.invert_xaxis()
    ax.set_xlabel("t (reverse time)")
    ax.set_ylabel(r"MSE($\hat{x}_0$, final $x_0$)")
    ax.set_title(f"Fig. 3: NFE {data['nfe']}, {data['num_samples']} samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def convergence_plot(inputs: list[Path], out: Path) -> Path:
    """FID against training step per (method, NFE) from ``ddm convergence`` files: whether the
    Table 1 models sit on their FID plateau."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    info = {}
    for path in sorted(inputs):
        with open(path) as f:
            data = json.load(f)
        info = data
        for nfe in sorted({r["nfe"] for r in data["rows"]}):
            rows = sorted((r["step"], r["fid"]) for r in data["rows"] if r["nfe"] == nfe)
            ax.plot(*zip(*rows), marker="o", label=f"{METHOD_LABELS.get(data['method'], data['method'])}, NFE {nfe}")
    ax.set_yscale("log")
    ax.set_xlabel("training step (EMA weights)")
    ax.set_ylabel("FID")
    ax.set_title(f"FID against training step ({info.get('num_samples')} samples, {info.get('extractor')})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


# -- provenance -----------------------------------------------------------------------------
#: The packages whose versions every table names (the numbers depend on them).
PROVENANCE_PACKAGES = ("torch", "snakemake", "dvc", "torch-fidelity")
#: Tracked paths the pipeline writes itself (its reports, DVC's lock file): changes there do not
#: make the numbers differ from what the commit's code and config give, so they are not "dirty".
PIPELINE_TRACKED = ("reports", "dvc.lock")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Plain text (a method name, a CSV field) as LaTeX that typesets the same characters."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def git_state(folder: str | Path = ".") -> dict:
    """``{"commit": HEAD's sha or None, "dirty": tracked changes outside PIPELINE_TRACKED}``
    (as ``git describe --dirty``; both None outside a git repository or without git)."""
    import os
    import subprocess

    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never take the index lock

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout if r.returncode == 0 else None

    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                 *(f":(top,exclude){p}" for p in PIPELINE_TRACKED))
    return {"commit": head.strip(), "dirty": None if status is None else bool(status.strip())}


def params_hash(params: Mapping, pairs: Iterable[tuple[str, str]], task_pairs: Iterable[tuple[str, str]] = ()) -> str:
    """Short sha256 of what the numbers depend on in params.yaml: the preset's dataset blocks
    and the resolved config (training and sampling) of every measured (dataset, method); with
    ``task_pairs`` (the conditioned tasks), also every measured (task, method)'s resolved config."""
    import hashlib

    from ddm.config import ConfigError, resolve, resolve_task

    def resolved(how, d: str, m: str) -> dict | None:  # None: params.yaml does not describe this pair
        try:
            return how(params, d, m)
        except ConfigError:
            return None

    blob = {"preset": params["presets"][params["preset"]],
            "methods": {f"{d}/{m}": resolved(resolve, d, m) for d, m in sorted(set(pairs))}}
    if task_pairs:  # only then: the hash of a run without conditioned tasks stays what it was
        blob["tasks"] = {f"{t}/{m}": resolved(resolve_task, t, m) for t, m in sorted(set(task_pairs))}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(paths: Iterable[Path], params: Mapping, folder: str | Path = ".", task_paths: Iterable[Path] = ()) -> dict:
    """Where the numbers of reports/metrics.json come from: git commit (and whether the work
    tree differed from it), hash of the resolved params, when the FIDs were computed (the metric
    files' ``computed_at``, else their modification time: both set by ``ddm evaluate``, never
    the clock of this call) and the versions of PROVENANCE_PACKAGES. ``task_paths``: the files of
    ``ddm evaluate-task`` (Tables 2 and 3), counted in the dates and the params hash."""
    stamps, pairs, task_pairs = [], [], []
    for p in sorted(Path(p) for p in [*paths, *task_paths]):
        with open(p) as f:
            r = json.load(f)
        stamps.append(r.get("computed_at") or utc_timestamp(p.stat().st_mtime))
        if "dataset" in r:
            pairs.append((r["dataset"], r["method"]))
        elif "method" in r:  # a task's reference.json names no method
            task_pairs.append((r["task"], r["method"]))
    git = git_state(folder)
    return {"git_commit": git["commit"], "git_dirty": git["dirty"], "params_hash": params_hash(params, pairs, task_pairs),
            "computed_first": min(stamps, default=None), "computed_last": max(stamps, default=None),
            "versions": package_versions()}


def provenance_text(prov: Mapping | None) -> dict | None:
    """The provenance of metrics.json as two LaTeX-safe lines: ``comment`` (full commit, for a
    ``%`` comment) and ``caption`` (short, for a caption's last line); None when absent."""
    if not prov:
        return None
    commit = prov["git_commit"] or "unknown (not a git repository)"
    dirty = ", dirty" if prov["git_dirty"] else ""
    first, last = prov["computed_first"] or "unknown", prov["computed_last"] or "unknown"
    when = last if first == last else f"{first} to {last}"
    names = [n for n in PROVENANCE_PACKAGES if n in prov["versions"]] + sorted(set(prov["versions"]) - set(PROVENANCE_PACKAGES))
    versions = ", ".join(f"{n} {prov['versions'][n]}" for n in names)
    comment = f"commit {commit}{dirty}; params {prov['params_hash']}; computed {when}; {versions}"
    short = (prov["git_commit"] or "unknown")[:12]
    day = last[:10] if first[:10] == last[:10] else f"{first[:10]} to {last[:10]}"
    caption = f"Provenance: commit {short}{dirty}, params {prov['params_hash']}, computed {day}; {versions}."
    return {"comment": " ".join(comment.split()), "caption": latex_escape(caption)}


# -- the PDF report -------------------------------------------------------------------------
#: Debian packages that give pdflatex and what reports/report.tex.j2 uses.
LATEX_PACKAGES = "texlive-latex-base texlive-latex-recommended texlive-fonts-recommended"
_FIGURE = re.compile(r"^(?:fid_vs_nfe_(?P<fid>[a-z0-9]+)|fig3_(?P<fig3>[a-z0-9]+)|convergence_(?P<conv>[a-z0-9]+)"
                     r"|samples_(?P<ds>[a-z0-9]+)_(?P<method>[a-z][a-z0-9_]*)_nfe(?P<nfe>\d+)"
                     r"|tasks_(?P<task>[a-z_]+))\.png$")


class ReportError(RuntimeError):
    """The PDF report could not be built (one line: what, and how to fix it)."""


def find_latex() -> str | None:
    """latexmk, else pdflatex, on PATH (None: the report is a placeholder page)."""
    return shutil.which("latexmk") or shutil.which("pdflatex")


def no_latex_message(out: str | Path) -> str:
    return (f"{out}: no pdflatex on PATH, so the report is a one-page placeholder; to build it install "
            f"LaTeX (Debian: apt-get install {LATEX_PACKAGES}) and rerun `snakemake all`")


def report_pages(figures: Iterable[str | Path]) -> list[dict]:
    """The report's figure pages, from the figure files the pipeline made: per dataset, FID
    against NFE, FID against training step, one page of sample grids per method (NFEs left to
    right) and Fig. 3; one page per conditioned task; then any other figure, captioned with its
    file name."""
    fid, fig3, conv, grids, other, tasks = {}, {}, {}, defaultdict(dict), [], {}
    for f in map(Path, figures):
        if f.suffix.lower() not in (".png", ".pdf", ".jpg", ".jpeg"):
            raise ReportError(f"{f}: not a figure pdflatex can include (PNG, PDF or JPEG)")
        m = _FIGURE.match(f.name)
        if not m or (m["task"] and m["task"] not in TASK_COLUMNS):
            other.append(f.name)
        elif m["task"]:
            tasks[m["task"]] = f.name
        elif m["fid"] or m["fig3"] or m["conv"]:
            (fid if m["fid"] else fig3 if m["fig3"] else conv)[m["fid"] or m["fig3"] or m["conv"]] = f.name
        else:
            grids[(m["ds"], m["method"])][int(m["nfe"])] = f.name
    pages = []
    for ds in sorted(set(fid) | set(fig3) | set(conv) | {d for d, _ in grids}):
        name = DATASET_LABELS.get(ds, latex_escape(ds))
        if ds in fid:
            pages.append({"files": [fid[ds]], "caption": f"FID against NFE on {name}: mean over the repeated "
                          "sample sets, error bars one standard deviation (the numbers of the tables)."})
        if ds in conv:
            pages.append({"files": [conv[ds]], "caption": f"FID against training step on {name}."})
        for (d, m), by_nfe in sorted(grids.items()):
            if d == ds:
                nfes = sorted(by_nfe)
                pages.append({"files": [by_nfe[n] for n in nfes], "caption": (
                    f"Samples of {METHOD_LABELS.get(m, latex_escape(m))} on {name} at NFE "
                    f"{', '.join(map(str, nfes))} (left to right): the first 64 samples of sample set 0.")})
        if ds in fig3:
            pages.append({"files": [fig3[ds]], "caption": f"Fig.~3 (left) on {name}: MSE between the predicted "
                          r"$x_0$ at each reverse step and the final sample, per model."})
    pages += [{"files": [tasks[t]], "caption": f"Conditioned generation (Tables 2 and 3), {TASK_COLUMNS[t]['title'].lower()} "
               "on its embedded stand-in task: one row per test example; left to right the condition, the samples of "
               "each method at each NFE of Table 2 (sample set 0) and the target."} for t in TASK_COLUMNS if t in tasks]
    pages += [{"files": [f], "caption": latex_escape(f"reports/figures/{f}")} for f in sorted(other)]
    return pages


def render_report(template: Path, metrics: Mapping, pages: list[dict], claims: bool = False) -> str:
    """reports/report.tex from its template (reports/report.tex.j2): a title page with the
    provenance (and claims.tex, the verdicts of ddm.claims, with ``claims``), then tables.tex (one
    page per table) and the figure pages."""
    env = _env()
    env.loader = __import__("jinja2").FileSystemLoader(str(Path(template).parent))
    prov = metrics.get("provenance")
    text = provenance_text(prov)
    return env.get_template(Path(template).name).render(
        preset=latex_escape(metrics["preset"]), ht=latex_escape(metrics["ht"]), pages=pages,
        provenance=text["caption"] if text else "Provenance: not recorded (reports/metrics.json has none).", claims=claims,
        date=(prov or {}).get("computed_last") or "date unknown",
        datasets=[DATASET_LABELS.get(d, latex_escape(d)) for d in sorted(metrics["datasets"])])


def _source_epoch(metrics: Mapping) -> int:
    """SOURCE_DATE_EPOCH for pdflatex: the time the numbers were computed, so the PDF's dates
    (and bytes) depend on the inputs only, not on when it was built."""
    from datetime import datetime, timezone

    stamp = (metrics.get("provenance") or {}).get("computed_last")
    if not stamp:
        return 0
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def _run_latex(latex: str, build: Path, epoch: int) -> Path:
    """Compile build/report.tex with latexmk or pdflatex (reruns until references settle)."""
    import os
    import subprocess

    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "FORCE_SOURCE_DATE": "1"}
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    cmd = [latex, "-pdf", *flags, "report.tex"] if Path(latex).name.startswith("latexmk") else [latex, *flags, "report.tex"]
    for _ in range(1 if cmd[1] == "-pdf" else 3):
        r = subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True, errors="replace", timeout=600)
        log_text = (build / "report.log").read_text(errors="replace") if (build / "report.log").exists() else r.stdout
        if r.returncode != 0 or not (build / "report.pdf").exists():
            sys.stderr.write(log_text)
            errors = [ln for ln in log_text.splitlines() if ln.startswith("!") or ": error" in ln.lower()
                      or re.match(r"^\./.*:\d+: ", ln)]
            raise ReportError(f"{Path(latex).name} failed on report.tex: {errors[0] if errors else 'exit ' + str(r.returncode)}"
                              " (its log is above)")
        if "Rerun to get" not in log_text and "Label(s) may have changed" not in log_text:
            break
    return build / "report.pdf"


def _placeholder_pdf(out: Path, message: str) -> Path:
    """A one-page PDF that says why the report was not built (matplotlib; no LaTeX needed)."""
    import textwrap

    plt = _pyplot()
    fig = plt.figure(figsize=(8.27, 11.69))
    fig.text(0.08, 0.92, "reports/report.pdf was not built", fontsize=16, va="top")
    fig.text(0.08, 0.86, textwrap.fill(message, 90), fontsize=9, va="top", family="monospace")
    from ddm.io import atomic_write

    atomic_write(out, lambda f: fig.savefig(f, format="pdf", metadata={"CreationDate": None}))
    plt.close(fig)
    return out


def build_report_pdf(template: Path, tables: Path, metrics_json: Path, figures: Iterable[str | Path],
                     out: Path, latex: str | None, claims: Path | None = None) -> Path:
    """reports/report.pdf: reports/report.tex.j2 rendered with the figure pages (and ``claims``,
    reports/claims.tex, on the first page), compiled with
    ``latex`` (latexmk or pdflatex) in a temporary folder and written atomically; without LaTeX
    (``latex`` None) a one-page placeholder that says what to install."""
    import tempfile

    from ddm.io import atomic_write

    figures = [Path(f) for f in figures]
    with open(metrics_json) as f:
        metrics = json.load(f)
    pages = report_pages(figures)
    if not latex:
        return _placeholder_pdf(Path(out), no_latex_message(out))
    if not Path(latex).is_file():
        raise ReportError(f"LaTeX program {latex} does not exist: install LaTeX (Debian: apt-get install "
                          f"{LATEX_PACKAGES}) or rerun Snakemake so it looks up pdflatex on PATH again")
    with tempfile.TemporaryDirectory(prefix="ddm-report-") as tmp:
        build = Path(tmp)
        shutil.copyfile(tables, build / "tables.tex")
        if claims:
            shutil.copyfile(claims, build / "claims.tex")
        (build / "figures").mkdir()
        for f in figures:
            shutil.copyfile(f, build / "figures" / f.name)
        (build / "report.tex").write_text(render_report(Path(template), metrics, pages, claims=bool(claims)))
        pdf = _run_latex(latex, build, _source_epoch(metrics)).read_bytes()
    return atomic_write(out, lambda f: f.write(pdf))
