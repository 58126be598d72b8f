"""The conditioned tasks' tables of reports/tables.tex (Tables 2 and 3; ``table2``, ``table3``, which
``ddm.report.tables.render_tables`` renders): one column per task (and per extra task metric,
``ddm.task_metrics``), the trivial references, the paper's reported rows (published.csv), and
Table 2's caption (what each embedded task stands in for, latent diffusion, the rows that do not
beat their task's trivial reference)."""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

from ddm.report.cells import result_cell
from ddm.report.labels import latex_escape

__all__ = ["table2", "table3", "TASK_COLUMNS", "REFERENCE_LABELS", "DATA_REFERENCES"]

#: Per task: its column title, metric label, decimals, and the paper's dataset (published.csv).
TASK_COLUMNS = {
    "saliency": {"title": "Saliency detection", "metric": r"MAE$\downarrow$", "digits": 4, "paper": "duts"},
    "super_resolution": {"title": "Super-resolution", "metric": r"PSNR$\uparrow$", "digits": 2, "paper": "div2k"},
    "inpainting": {"title": "Image inpainting", "metric": r"FID$\downarrow$", "digits": 2, "paper": "celebahq256"},
}
#: Labels of the trivial references (``ddm.conditioned.task_references``).
REFERENCE_LABELS = {"all_background": "All background", "bicubic": "Bicubic", "mean_fill": "Mean-colour fill",
                    "test_images": "Test images (real)"}
#: References that are the data itself (the metric's floor), not a trivial method a model should beat.
DATA_REFERENCES = frozenset({"test_images"})


def _task_order(cond: Mapping) -> list[str]:
    """The measured tasks in the paper's column order (saliency, super-resolution, inpainting)."""
    return [t for t in TASK_COLUMNS if t in cond["tasks"]]


def _task_cell(cond: Mapping, task: str, method: str, nfe: int) -> str:
    return _marked_cell(cond["tasks"][task], method, nfe, TASK_COLUMNS[task]["digits"])


def _marked_cell(t: Mapping, method: str, nfe: int, digits: int) -> str:
    """A method's cell of a metric's ``results`` at ``nfe``, with its column's marker if it is the best."""
    column = t["markers"].get(str(nfe), {})
    marker = column.get("marker") if column.get("best") == method else None
    return result_cell(t["results"].get(method, {}).get(str(nfe)), marker, digits)


def _reported(published: list[dict], table: str, task: str) -> list[tuple[str, int, float]]:
    """(method, NFE, value) of the paper's rows of ``table`` on the task's dataset (published.csv)."""
    ds = TASK_COLUMNS[task]["paper"]
    return [(r["method"], int(r["nfe"]), float(r["value"])) for r in published if r["table"] == table and r["dataset"] == ds]


def table2(cond: Mapping, published: list[dict]) -> dict:
    """Table 2: one (method, value) column pair per task, and one per extra metric of a task
    (``ddm.task_metrics``) beside it; rows: the measured methods at Table 2's NFEs, the trivial
    references, the paper's reported rows (its DDPM/DDM and the state of the art)."""
    from itertools import zip_longest

    tasks = _task_order(cond)
    digits = {t: TASK_COLUMNS[t]["digits"] for t in tasks}
    extras = [(t, name) for t in tasks for name in cond["tasks"][t].get("extra", {})]
    measured = [[(f"{cond['labels'][m]}-{n} step", _task_cell(cond, t, m, n)) for t in tasks]
                + [(f"{cond['labels'][m]}-{n} step", _extra_cell(cond, t, e, m, n)) for t, e in extras]
                for m in cond["methods"] for n in cond["table2_nfe"]]
    refs = [[(REFERENCE_LABELS.get(k, latex_escape(k)), f"{v:.{digits[t]}f}")
             for k, v in cond["tasks"][t]["references"].items()] for t in tasks] + [[] for _ in extras]
    reported = [[(latex_escape(m) + (f"-{n} step (paper)" if n else "") + r"\reported{}", f"{v:.{digits[t]}f}")
                 for m, n, v in _reported(published, "2", t)] for t in tasks] + [[] for _ in extras]
    blank = ("", "")

    def pad(columns):
        return [list(row) for row in zip_longest(*columns, fillvalue=blank)]

    columns = [{"title": TASK_COLUMNS[t]["title"], "metric": TASK_COLUMNS[t]["metric"]} for t in tasks]
    for t, e in extras:
        x = cond["tasks"][t]["extra"][e]
        columns.append({"title": TASK_COLUMNS[t]["title"],
                        "metric": x["label"] + (r"$\uparrow$" if x["higher_is_better"] else r"$\downarrow$")})
    return {"tasks": columns, "measured": measured, "references": pad(refs), "reported": pad(reported),
            "caption": _task_caption(cond)}


def _extra_cell(cond: Mapping, task: str, name: str, method: str, nfe: int) -> str:
    """The cell of an extra task metric (``ddm.task_metrics``), marked as the task's own are."""
    x = cond["tasks"][task]["extra"][name]
    return _marked_cell(x, method, nfe, x["digits"])


def table3(cond: Mapping, published: list[dict]) -> dict:
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
    return "; ".join(parts) + _latent_caption(cond) + _below_reference_caption(cond)


def _below_reference_caption(cond: Mapping) -> str:
    """Table 2's caption sentence naming each measured row that does not beat its task's best trivial
    reference at any of Table 2's NFEs, and, for PSNR, why a sampler may not: PSNR rewards the posterior
    mean, and a sample from the exact posterior has twice its expected squared error (E|x - x'|^2 =
    2 E Var(x | y) for x' drawn independently of x given y: 3.01 dB lower PSNR)."""
    parts, psnr = [], False
    for task in _task_order(cond):
        t = cond["tasks"][task]
        refs = {k: v for k, v in t["references"].items() if k not in DATA_REFERENCES}
        if not refs:
            continue
        better = max if t["higher_is_better"] else min
        name, ref = better(refs.items(), key=lambda kv: kv[1])
        beats = (lambda v: v > ref) if t["higher_is_better"] else (lambda v: v < ref)
        below = [cond["labels"][m] for m in cond["methods"]
                 if not any(beats(r["mean"]) for n, r in t["results"].get(m, {}).items() if int(n) in cond["table2_nfe"])]
        if below:
            digits = TASK_COLUMNS[task]["digits"]
            parts.append(f"{TASK_COLUMNS[task]['title'].lower()}: {', '.join(below)} (against "
                         f"{REFERENCE_LABELS.get(name, latex_escape(name)).lower()}, {ref:.{digits}f})")
            psnr |= t["metric"] == "psnr"
    if not parts:
        return ""
    why = (". PSNR rewards the posterior mean: a sample from the exact posterior has twice its expected squared "
           "error (3.01~dB lower PSNR), so a sampler is below a mean-like reference such as bicubic wherever the "
           "posterior mean beats that reference by less than 3~dB") if psnr else ""
    return ". Not better than the task's trivial reference at any NFE of this table: " + "; ".join(parts) + why


def _latent_caption(cond: Mapping) -> str:
    """Table 2's caption sentence on the tasks that run in latent space (§5.1: a KL autoencoder of
    factor 4, latent diffusion): factor, latent channels and test-split reconstruction PSNR."""
    parts = [f"{TASK_COLUMNS[k]['title'].lower()} runs in the latent space of a KL-f{t['latent']['factor']} "
             f"autoencoder ({t['latent']['z_channels']} latent channels), reconstruction PSNR "
             f"{t['latent']['psnr']:.1f}~dB on the test split"
             for k, t in ((k, cond["tasks"][k]) for k in _task_order(cond)) if t.get("latent")]
    return ". Latent diffusion (as the paper's >256-pixel tasks): " + "; ".join(parts) if parts else ""
