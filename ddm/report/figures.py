"""The report's figures as PNG (matplotlib, Agg): FID against NFE, sample grids, the conditioned
tasks' figures, Fig. 3 and FID against training step. A figure job imports neither torchvision
(``tile``) nor the tables' or statistics' code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from ddm.io import InputError
from ddm.report.labels import METHOD_LABELS, method_label

__all__ = ["fid_plot", "tile", "sample_grid", "task_condition", "task_figure", "fig3_plot", "convergence_plot"]


def load_pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported when a figure is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, **kw) -> Path:
    from ddm.io import atomic_write

    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=120, **kw))
    load_pyplot().close(fig)
    return out


def _finish(fig, ax, out: Path, xlabel: str, ylabel: str, title: str, **title_kw) -> Path:
    """Label the axes, title and legend of a line plot, and write it (``_save``)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **title_kw)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def fid_plot(metrics: Mapping, dataset: str, out: Path) -> Path:
    """FID against NFE, one line per method, error bars = std over repeats (InputError, one line,
    for a dataset the metrics do not have)."""
    if dataset not in metrics["datasets"]:
        raise InputError(f"no dataset '{dataset}' in the metrics (they have: "
                         f"{', '.join(sorted(metrics['datasets'])) or 'none'}): pick one of them")
    plt = load_pyplot()
    d = metrics["datasets"][dataset]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, by_nfe in sorted(d["results"].items()):
        xs = sorted(int(n) for n in by_nfe)
        ys = [by_nfe[str(n)]["mean"] for n in xs]
        err = [by_nfe[str(n)]["std"] or 0 for n in xs]
        ax.errorbar(xs, ys, yerr=err, marker="o", label=method_label(m, metrics, latex=False), capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return _finish(fig, ax, out, "NFE", f"FID ({d['extractor']})", f"{dataset}: FID against NFE")


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
    plt = load_pyplot()
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
    """condition | one column per sample file | target, for the first ``n`` test examples; one
    label per sample file (else InputError, one line)."""
    if len(labels) != len(samples):
        raise InputError(f"{len(samples)} sample files but {len(labels)} labels: give one label per file")
    target = split["mask_uint8"] if "mask_uint8" in split else split["hr_uint8"] if "hr_uint8" in split else split["image_uint8"]
    columns = [task_condition(split)[:n], *[_rgb(x[:n]) for x in samples], _rgb(target[:n])]
    rows = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: example i, then its columns
    grid = tile(rows, nrow=len(columns), padding=1, pad_value=0.5)
    plt = load_pyplot()
    names = ["condition", *labels, "target"]
    fig = plt.figure(figsize=(1.1 * len(columns) + 0.5, 1.1 * min(n, len(target)) + 0.6))
    plt.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    width = grid.shape[2] / len(columns)
    plt.xticks([(i + 0.5) * width for i in range(len(columns))], names, fontsize=7, rotation=20)
    plt.yticks([])
    return _save(fig, out, bbox_inches="tight")


def fig3_plot(fig3_json: Path, out: Path) -> Path:
    """Fig. 3 (left): MSE of the predicted x0 against reverse time, per model."""
    plt = load_pyplot()
    with open(fig3_json) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, c in sorted(data["curves"].items()):
        ax.plot(c["t"], c["mse"], label=METHOD_LABELS.get(name, name))
    ax.invert_xaxis()
    return _finish(fig, ax, out, "t (reverse time)", r"MSE($\hat{x}_0$, final $x_0$)",
                   f"Fig. 3: NFE {data['nfe']}, {data['num_samples']} samples")


def convergence_plot(inputs: list[Path], out: Path) -> Path:
    """FID against training step per (method, NFE) from ``ddm convergence`` files: whether the
    Table 1 models sit on their FID plateau."""
    plt = load_pyplot()
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
    return _finish(fig, ax, out, "training step (EMA weights)", "FID",
                   f"FID against training step ({info.get('num_samples')} samples, {info.get('extractor')})", fontsize=8)
