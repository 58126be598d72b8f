"""Metric files -> statistics: reports/metrics.csv and the numbers of reports/metrics.json.

Metric files -> tidy pandas table, one row per sample set (``metric_records``; reports/metrics.csv,
``records_csv``) -> mean +- std per group (``summarize_records``) and markers as JSON (``collect``;
reports/metrics.json); the conditioned tasks' section (Tables 2 and 3: ``collect_conditioned``);
all of ``ddm stats``' numbers at once, with Table 1's Param column (``model_sizes``), the plateau
check and the provenance: ``collect_metrics``. ``ddm.report.tables`` lays the numbers out as LaTeX.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from ddm.config import all_methods, model_of, training_twins
from ddm.registry import GRIDS, SAMPLERS
from ddm.replicates import replicate_count, replicated_methods, split_replicate
from ddm.report.labels import latex_escape
from ddm.roles import table_rows
from ddm.stats import mark_best, summarize

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RECORD_COLUMNS", "RECORD_KEYS", "GROUP_KEYS", "metric_records", "records_csv", "read_records_csv",
           "summarize_records", "collect", "add_plateau", "collect_conditioned", "model_sizes", "collect_metrics",
           "solver_label", "FINAL_STEP_LABELS", "TASK_METHOD_LABELS"]


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
RECORD_COLUMNS = ("dataset", "method", "nfe", "repeat", "fid", "kid", "num_samples", "extractor", "reference",
                  "weights_sha256", "computed_at")
#: The columns that name a sample set (the table's sort order), and those of a group of repeats.
RECORD_KEYS = ("dataset", "method", "nfe", "repeat")
GROUP_KEYS = ("dataset", "method", "nfe")
_RECORD_DTYPES = {"nfe": "int64", "repeat": "int64", "fid": "float64", "kid": "float64", "num_samples": "int64"}


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
    table = table.assign(fid=table["fid"].map(float.__repr__),
                         kid=table["kid"].map(lambda v: "" if v != v else float.__repr__(v)))  # NaN: no KID
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
    repeat's ``num_samples``; ``kid``: the KIDs' ``{"values", "mean", "std"}`` (None where a
    file has no KID). Mean and std are ``ddm.stats.summarize``'s (numpy), not pandas' own group
    reductions, which sum in another order and can differ in the last bit."""
    table = records.sort_values(list(RECORD_KEYS), kind="stable")
    groups = table.groupby(list(GROUP_KEYS), sort=True)
    return groups["fid"].agg(values=lambda s: s.tolist(), mean=lambda s: summarize(s)["mean"],
                             std=lambda s: summarize(s)["std"], n="size").join(
        groups["num_samples"].first()).join(groups["kid"].agg(kid=_kid_summary))


def _kid_summary(kids: pd.Series) -> dict | None:
    """The KIDs of a group: values, mean and std (None for one value); None if a file has none."""
    if kids.isna().any():
        return None
    s = summarize(kids)
    return {"values": kids.tolist(), "mean": s["mean"], "std": s["std"] if s["n"] > 1 else None}


def _markers(results: Mapping, rows: list[str], lower_is_better: bool = True) -> dict:
    """Per NFE column: best vs second best of ``rows`` (Table 1's markers)."""
    columns = {}
    for nfe in sorted({int(n) for m in rows for n in results[m]}):
        group = {m: results[m][str(nfe)]["values"] for m in rows if str(nfe) in results[m]}
        mb = mark_best(group, lower_is_better=lower_is_better)
        columns[str(nfe)] = {k: mb[k] for k in ("best", "second", "marker", "p", "t", "test", "reason")}
        units = {results[m][str(nfe)].get("unit") for m in group} - {None}
        if units:  # the t-test's unit when it is not the sample sets (ddm.replicates: training seeds)
            columns[str(nfe)]["unit"] = " / ".join(sorted(units))
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


def _training_seeds(by_dataset: dict, records: pd.DataFrame, params: Mapping) -> None:
    """With ``replicates: K`` > 1 (ddm.replicates): each replicated method's result becomes the K
    networks' values, network k scored on its own sample set (repeat k), with their mean, std and
    n; the spread of network 0's repeated sample sets moves to ``sample_sets`` (reported beside
    it: it understates the variance, which the training seeds show)."""
    K = replicate_count(params)
    rows = records  # with the columns base and k (collect: the method and replicate of each model name)
    rows = rows[(rows["k"] == rows["repeat"]) & (rows["k"] < K) & rows["base"].isin(replicated_methods(params))]
    for (ds, m, nfe), group in rows.groupby(["dataset", "base", "nfe"], sort=True):
        entry = by_dataset[ds][m].get(str(nfe))
        if entry is None or group["k"].max() == 0:
            continue  # no replicate measured here (or not its method's own sets): the sample sets stay
        values = group.sort_values("k")["fid"].tolist()
        s = summarize(values)
        sets = {k: entry[k] for k in ("values", "mean", "std", "n")}
        entry.update(values=values, mean=s["mean"], std=s["std"] if s["n"] > 1 else None, n=s["n"],
                     unit="training seeds", sample_sets=sets)
        if "kid" in entry:
            entry["kid"] = _kid_summary(group.sort_values("k")["kid"])


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
    split = records["method"].map(split_replicate)  # model name -> (method, replicate k): ddm.replicates
    records = records.assign(base=split.str[0], k=split.str[1])
    by_dataset: dict = defaultdict(lambda: defaultdict(dict))
    for (ds, m, nfe), s in summarize_records(records[records["k"] == 0]).to_dict("index").items():
        by_dataset[ds][m][str(nfe)] = {"values": s["values"], "mean": s["mean"], "n": s["n"],
                                       "std": s["std"] if s["n"] > 1 else None, "num_samples": s["num_samples"]}
        if s["kid"] is not None:
            by_dataset[ds][m][str(nfe)]["kid"] = s["kid"]
    if replicate_count(params) > 1:
        _training_seeds(by_dataset, records, params)
    preset = params["presets"][params["preset"]]
    run = {"name": params.get("run", "quick"), "replicates": replicate_count(params),  # Table 1's caption
           "train_steps": {ds: preset[ds]["train"]["steps"] for ds in sorted(preset)}}
    out = {"preset": params["preset"], "ht": params["ht"], "table1_methods": list(params["methods"]), "run": run,
           "ablation_rows": table_rows(params), "datasets": {}}
    measured = set(records["base"])
    shared = {m: owner for m, owner in training_twins(params).items() if m in measured}
    if shared:  # rows that sample another row's network (the same training: trained once; ddm.config)
        out["shared_networks"] = shared
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


def add_plateau(metrics: dict, convergence_paths: Iterable[Path]) -> None:
    """Each dataset's ``plateau`` (``ddm.plateau.plateau_check``: is each Table 1 network, and each
    ablation network with a record, on its plateau?) from the convergence records of ``ddm
    convergence``, their checksums verified; a Table 1 method without a record is ``not checked``."""
    from ddm.contracts import load_json_product
    from ddm.plateau import CRITERION, NOT_CHECKED, plateau_check

    records = [load_json_product(p, "convergence") for p in sorted(Path(p) for p in convergence_paths)]
    for ds, d in metrics["datasets"].items():
        found = plateau_check([r for r in records if r["dataset"] == ds], d["results"])
        checked = [*metrics["table1_methods"], *(m for m in found if m not in metrics["table1_methods"])]
        d["plateau"] = {m: found.get(m, {"verdict": NOT_CHECKED, "checks": [], "reason": "no convergence record"})
                        for m in checked if m in d["results"]}
    metrics["plateau_criterion"] = CRITERION


# -- conditioned generation (Tables 2 and 3) ------------------------------------------------
#: Row labels of the conditioned methods (a ``label:`` in params.yaml replaces them).
TASK_METHOD_LABELS = {"ddm": "DDM", "ddpm": "DDPM"}


def _task_results(metric_paths: Iterable[Path], extra: str | None = None) -> dict:
    """task -> method -> NFE -> mean +- std of the per-sample-set files of ``ddm evaluate-task``:
    of the task's own metric, or of the extra metric ``extra`` (``ddm.task_metrics``) where a file has it."""
    values: dict = defaultdict(list)
    for p in sorted(Path(p) for p in metric_paths):
        with open(p) as f:
            r = json.load(f)
        if extra is None or extra in r.get("extra", {}):
            value = r["value"] if extra is None else r["extra"][extra]
            values[r["task"], r["method"], int(r["nfe"])].append((int(r["repeat"]), float(value), r["num_samples"]))
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
    metric_paths = list(metric_paths)  # read once per metric
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
    _extra_task_metrics(tasks, metric_paths, block, methods)
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


def _extra_task_metrics(tasks: dict, metric_paths: Iterable[Path], block: Mapping, methods: list[str]) -> None:
    """Each task's extra metrics (its ``metrics`` in params.yaml, ``ddm.task_metrics``) as
    ``extra``: name -> label, direction, decimals, results and markers, as the task's own metric."""
    from ddm.task_metrics import TASK_METRICS

    for task, t in tasks.items():
        for name in block.get("tasks", {}).get(task, {}).get("metrics", []):
            res = _task_results(metric_paths, name).get(task, {})
            info = TASK_METRICS.info(name)
            rows = [m for m in methods if m in res]
            t.setdefault("extra", {})[name] = {
                "label": info["label"] or latex_escape(name), "higher_is_better": info["higher_is_better"],
                "digits": info["digits"], "results": res, "markers": _markers(res, rows, not info["higher_is_better"])}


# -- all of ``ddm stats``' numbers ------------------------------------------------------------------
def model_sizes(paths: Iterable[str | Path]) -> dict:
    """Table 1's Param column: dataset -> model name (the file's stem) -> parameter count of the
    trained network of each model file (``ddm train``)."""
    from ddm.experiment import load_model

    sizes: dict = {}
    for path in paths:
        exp, net = load_model(path)
        sizes.setdefault(exp.cfg["dataset"], {})[Path(path).stem] = sum(q.numel() for q in net.parameters())
    return sizes


def collect_metrics(inputs: list, params: Mapping, *, models: Iterable = (), convergence: Iterable | None = None,
                    task_metrics: list | None = None) -> tuple[dict, pd.DataFrame]:
    """reports/metrics.json and the table of reports/metrics.csv (``ddm stats``; the files checked
    already, ``ddm.contracts``): :func:`collect` of the metric files ``inputs`` (``ddm evaluate``)
    with the parameter counts of the model files ``models`` (:func:`model_sizes`); each Table 1
    network's plateau check from the records of ``ddm convergence`` when ``convergence`` is given
    (:func:`add_plateau`; an empty list: none checked); the ``conditioned`` section of the files of
    ``ddm evaluate-task`` and ``ddm train-autoencoder`` in ``task_metrics`` (each task's
    reference.json among them; :func:`collect_conditioned`); and the ``provenance`` (commit,
    params hash, dates, versions: ``ddm.report.provenance``). Returns (metrics, records)."""
    from ddm.contracts import is_autoencoder_file
    from ddm.report.provenance import provenance

    sizes = model_sizes(models)
    records = metric_records([Path(p) for p in inputs])  # tidy table: one row per sample set
    metrics = collect(records, params, model_params=sizes)
    if convergence is not None:  # is each Table 1 network on its plateau? (ddm.plateau)
        add_plateau(metrics, convergence)
    if task_metrics:
        refs = [p for p in task_metrics if Path(p).name == "reference.json"]
        aes = [p for p in task_metrics if is_autoencoder_file(p)]
        metrics["conditioned"] = collect_conditioned([p for p in task_metrics if p not in refs + aes], refs, params,
                                                     autoencoder_paths=aes)
    metrics["provenance"] = provenance(inputs, params, task_paths=task_metrics or [])
    return metrics, records
