"""Metrics -> statistics -> LaTeX tables and figures (Tables 1, 4, 5; Fig. 3; FID vs NFE).

Data -> tidy JSON (``collect``) -> jinja2 template (``render_tables``): numbers are formatted
in Python, the template uses LaTeX-safe delimiters and StrictUndefined (a missing number fails
instead of leaving a blank cell), and the output is byte-stable (sorted keys, fixed decimals,
no dates).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ddm.config import all_methods, model_of
from ddm.stats import mark_best, summarize

__all__ = ["collect", "render_tables", "fid_plot", "sample_grid", "fig3_plot", "x0_mse_curve", "TABLE5_ROWS", "METHOD_LABELS"]

#: Table 1 labels of the methods this project trains.
METHOD_LABELS = {"ddm": "DDM (ours)", "ddpm": "DDPM (VP-SDE, EM)", "sde": "SDE (VE-SDE, EM)",
                 "ddpm_x0": "DDPM + $x_0$ branch"}
SAMPLER_LABELS = {"ddm": "Alg. 2", "ddm_deterministic": "deterministic (authors)", "ddim": "DDIM",
                  "dpmpp_2m": "DPM-Solver++(2M)", "vp_em": "Euler-Maruyama", "vp_ancestral": "ancestral",
                  "ve_em": "Euler-Maruyama"}
GRID_LABELS = {"uniform": "uniform $t$", "authors": "authors' grid", "polynomial": "$t_i = (1 - i/N)^{%g}$",
               "sde": "uniform $t$", "lambda": "uniform $\\lambda$"}


def solver_label(params: Mapping, method: str) -> str:
    """'DDM, DPM-Solver++(2M), uniform lambda' for the fair-solver table."""
    entry = all_methods(params)[method]
    model = model_of(params, method)
    base = {"ddm": "DDM", "ddpm": "DDPM", "sde": "SDE"}.get(model, model.replace("_", r"\_"))
    grid = GRID_LABELS.get(entry["grid"], entry["grid"])
    if "%g" in grid:
        grid = grid % entry.get("rho", 2.0)
    return f"{base}, {SAMPLER_LABELS.get(entry['sampler'], entry['sampler'])}, {grid}"


def _markers(results: Mapping, rows: list[str]) -> dict:
    """Per NFE column: best vs second best of ``rows`` (Table 1's markers)."""
    columns = {}
    for nfe in sorted({int(n) for m in rows for n in results[m]}):
        group = {m: results[m][str(nfe)]["values"] for m in rows if str(nfe) in results[m]}
        mb = mark_best(group)
        columns[str(nfe)] = {k: mb[k] for k in ("best", "second", "marker", "p", "t", "test", "reason")}
    return columns


#: Table 4 rows: method -> h_t as the paper writes it.
TABLE4_ROWS = {"constant": r"$\mathbf{c}$", "linear": r"$\mathbf{a}t + \mathbf{c}$",
               "quadratic": r"$\mathbf{a}t^2 + \mathbf{b}t + \mathbf{c}$", "exp": r"$e^{\mathbf{a}t} + \mathbf{c}$",
               "sin": r"$\sin \mathbf{a}t$"}
#: Table 5 rows: (group, label, method); "ddm" is the main model (inverse weights, decoder, l2).
TABLE5_ROWS = [
    ("Hyperparameter", r"$\lambda_1 = 1$, $\lambda_2 = 1$", "w_unit"),
    ("Hyperparameter", r"$\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$", "ddm"),
    ("Hyperparameter", r"$\lambda_1 = e^t$, $\lambda_2 = e^{1-t}$", "w_exp"),
    ("Architecture", "U-Net+conv", "arch_conv"),
    ("Architecture", "U-Net+decoder", "ddm"),
    ("Loss type", r"$\ell_1$", "loss_l1"),
    ("Loss type", r"$\ell_2$", "ddm"),
]


def collect(paths: Iterable[Path], params: Mapping) -> dict:
    """Per-sample-set FID files (``ddm evaluate``) -> mean +- std per (dataset, method, NFE) and
    Table 1's markers per column (best vs second best of the trained Table 1 methods)."""
    runs: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    info: dict = {}
    for p in sorted(paths):
        with open(p) as f:
            r = json.load(f)
        runs[r["dataset"]][r["method"]][int(r["nfe"])].append(r)
        info.setdefault(r["dataset"], {"extractor": r["extractor"], "reference": r["reference"]})
    out = {"preset": params["preset"], "ht": params["ht"], "table1_methods": list(params["methods"]), "datasets": {}}
    for ds, methods in sorted(runs.items()):
        results = {}
        for m, by_nfe in sorted(methods.items()):
            results[m] = {}
            for nfe, rs in sorted(by_nfe.items()):
                rs = sorted(rs, key=lambda r: r["repeat"])
                values = [r["fid"] for r in rs]
                s = summarize(values)
                results[m][str(nfe)] = {"values": values, "mean": s["mean"], "std": s["std"] if s["n"] > 1 else None,
                                        "n": s["n"], "num_samples": rs[0]["num_samples"]}
        t1_methods = [m for m in params["methods"] if m in results]
        entry = {**info[ds], "results": results, "table1": _markers(results, t1_methods)}
        variants = [m for m in params["solver_methods"] if m in results]
        if variants:
            nfes = {n for m in variants for n in results[m]}
            base = [m for m in sorted({model_of(params, v) for v in variants}) if m in results]
            trimmed = {m: {n: v for n, v in results[m].items() if n in nfes} for m in base + variants}
            rows = base + variants
            entry["solver_table"] = {"rows": rows, "labels": {m: solver_label(params, m) for m in rows},
                                     "columns": _markers(trimmed, rows)}
        out["datasets"][ds] = entry
    return out


# -- LaTeX ----------------------------------------------------------------------------------
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("ddm", "templates"),
        block_start_string="((*", block_end_string="*))",
        variable_start_string="(((", variable_end_string=")))",
        comment_start_string="((#", comment_end_string="#))",
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


def _cell(res: Mapping | None, marker: str | None = None) -> str:
    if res is None:
        return "--"
    text = f"{res['mean']:.2f}"
    if marker == "significant":
        text = r"\textbf{" + text + r"}\sigmark"
    elif marker == "not_significant":
        text = r"\textbf{" + text + r"}\nsmark"
    if res.get("std") is not None:
        text += rf" $\pm$ {res['std']:.3f}"
    return text


def _published(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"published results CSV not found: {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


DATASET_LABELS = {"digits": "Digits (8$\\times$8)", "cifar10": "CIFAR-10", "celebahq256": "CelebA-HQ-256"}


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_tables(metrics: Mapping, published_csv: Path) -> str:
    """reports/tables.tex: Table 1 (measured, with markers; reported peers marked as such),
    Table 4 and Table 5 when their ablations were run."""
    published = _published(published_csv)
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
            rows.append({"label": METHOD_LABELS.get(m, m.replace("_", r"\_")), "cells": cells})
        reported = defaultdict(dict)
        params_of = {}
        for r in published:
            if r["table"] == "1" and r["dataset"] == ds:
                reported[r["method"]][int(r["nfe"])] = float(r["value"])
                params_of[r["method"]] = r["params"]
        reported_rows = [{"label": m, "params": params_of[m],
                          "cells": [f"{v[n]:.2f}" if n in v else "--" for n in nfes]} for m, v in reported.items()]
        samples = {n: next(res[m][str(n)]["num_samples"] for m in t1_methods if str(n) in res[m]) for n in nfes}
        repeats = {n: max(res[m][str(n)]["n"] for m in t1_methods if str(n) in res[m]) for n in nfes}
        t4 = [{"label": TABLE4_ROWS[f], "cells": [_cell(res[f"ht_{f}"].get(str(n))) for n in _nfes(res, f"ht_{f}")]}
              for f in TABLE4_ROWS if f"ht_{f}" in res]
        t4_nfes = _nfes(res, "ht_constant") if t4 else []
        t5 = [{"group": g, "label": label, "cell": _cell(res[m].get("10")) if m in res else "--"}
              for g, label, m in TABLE5_ROWS] if any(m in res for _, _, m in TABLE5_ROWS if m != "ddm") else []
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
            "extractor": d["extractor"], "reference": d["reference"].replace("_", r"\_"),
            "table4": t4, "t4_nfes": t4_nfes, "table5": t5,
        })
    return _env().get_template("tables.tex.j2").render(datasets=datasets, preset=metrics["preset"],
                                                        ht=metrics["ht"])


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
        ax.errorbar(xs, ys, yerr=err, marker="o", label=METHOD_LABELS.get(m, m), capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"FID ({d['extractor']})")
    ax.set_title(f"{dataset}: FID against NFE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def sample_grid(samples: Path, title: str, out: Path, n: int = 64) -> Path:
    """The first n samples of a sample file as an 8-wide grid."""
    from torchvision.utils import make_grid

    plt = _pyplot()
    x = torch.load(samples, weights_only=True)[:n]
    grid = make_grid(x, nrow=8, padding=1, pad_value=255)
    fig = plt.figure(figsize=(4, 4))
    plt.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    plt.axis("off")
    plt.title(title, fontsize=9)
    return _save(fig, out, bbox_inches="tight")


@torch.no_grad()
def x0_mse_curve(exp, net, nfe: int, seeds: list[int]) -> dict:
    """Fig. 3: MSE between the predicted x0 at each reverse step and the final sample."""
    from ddm.experiment import generate

    seen: list[tuple[float, torch.Tensor]] = []
    final = generate(exp, net, nfe, seeds, batch_size=len(seeds),
                     callback=lambda i, t, x, x0: seen.append((float(t[0]), x0.detach().cpu())))
    return {"t": [t for t, _ in seen], "mse": [float((x0 - final).square().mean()) for _, x0 in seen]}


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
