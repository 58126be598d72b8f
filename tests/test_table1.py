"""Table 1's Param column, its sampler caption, and the solver table's ceiling rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ddm.config import resolve
from ddm.experiment import build
from ddm.report.collect import collect
from ddm.report.tables import format_params, render_tables

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, text", [(175_000_000, "175M"), (12_400_000, "12M"), (1_560_000, "1.6M"),
                                     (272_001, "0.27M"), (9_999, "0.01M")])
def test_format_params(n, text):
    assert format_params(n) == text


def _metric_files(tmp_path: Path, params: dict, methods, nfes=(10, 20), repeats=2) -> list[Path]:
    files = []
    for m in methods:
        for n in nfes:
            for r in range(repeats):
                p = tmp_path / f"{m}-{n}-{r}.json"
                fid = {"ddm": 10.0, "ddpm": 50.0, "sde": 80.0}.get(m, 30.0) + r + n / 10
                p.write_text(json.dumps({"dataset": "digits", "method": m, "nfe": n, "repeat": r, "fid": fid,
                                         "num_samples": 100, "extractor": "digits-classifier",
                                         "reference": "train split"}))
                files.append(p)
    return files


def test_param_column_equals_the_models_parameter_counts(tmp_path):
    import yaml

    params = yaml.safe_load((REPO / "tests" / "fixtures" / "params-tiny.yaml").read_text())
    counts = {}
    for m in params["methods"]:
        exp = build(resolve(params, "digits", m))
        counts[m] = sum(p.numel() for p in exp.make_model().parameters())
    assert len(set(counts.values())) > 1  # DDM's two decoders differ from the one-head baselines
    metrics = collect(_metric_files(tmp_path, params, params["methods"]), params, model_params={"digits": counts})
    tex = render_tables(metrics, REPO / "ddm" / "data" / "published.csv")
    header = next(line for line in tex.splitlines() if line.startswith("Method"))
    assert header.split("&")[1].strip() == "Param"
    for m, label in (("ddm", "DDM (ours)"), ("ddpm", "DDPM"), ("sde", "SDE")):
        row = next(line for line in tex.splitlines() if line.startswith(label))
        assert row.split("&")[1].strip() == format_params(counts[m]), row
    # the caption names each row's sampler and final step
    assert "Samplers: DDM, Alg. 2, uniform $t$; DDPM, Euler-Maruyama" in tex


def test_ceiling_rows_are_listed_last_and_never_marked(tmp_path):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["solver_study"] = True
    variants = ["ddm_x0head", "ddm_ceiling", "ddpm_ceiling"]
    files = _metric_files(tmp_path, params, ["ddm", "ddpm"] + variants, nfes=(10,), repeats=3)
    for p in files:  # the ceiling rows score best: they must still not take the markers
        r = json.loads(p.read_text())
        if r["method"].endswith("_ceiling"):
            r["fid"] = 1.0 + r["repeat"] * 0.01
            p.write_text(json.dumps(r))
    st = collect(files, params)["datasets"]["digits"]["solver_table"]
    assert st["rows"][-2:] == ["ddm_ceiling", "ddpm_ceiling"]
    assert st["columns"]["10"]["best"] == "ddm"
    assert "no network error" in st["labels"]["ddm_ceiling"]
    assert "$x_0$ head" in st["labels"]["ddm_x0head"]


def test_tiny_run_table1_has_the_param_column(tiny_run):
    """End to end: the Param cells of reports/tables.tex equal the trained model files' counts."""
    from ddm.nets import UNet

    tex = (tiny_run / "reports" / "tables.tex").read_text()
    for path in sorted((tiny_run / "results" / "models" / "digits").glob("*.pt")):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        n = sum(p.numel() for p in UNet(**blob["model_kwargs"]).parameters())
        label = {"ddm": "DDM (ours)", "ddpm": "DDPM", "sde": "SDE"}.get(path.stem)
        if label is None:
            continue
        row = next(line for line in tex.splitlines() if line.startswith(label))
        assert re.split(r"\s*&\s*", row)[1] == format_params(n)
