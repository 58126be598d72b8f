"""ddm.report: collect (mean +- std, Table 1 markers) and render_tables (LaTeX) on hand-written
metric files with fixed FID values, checked against numpy / scipy.stats.ttest_ind (Welch)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import numpy as np
import pytest
from scipy import stats as st

from conftest import REPO, TINY_PARAMS, run_ddm
from ddm.config import load_params
from ddm.report import METHOD_LABELS, collect, render_tables

PUBLISHED = REPO / "workflow" / "published.csv"

#: FID per (method, NFE): 3 repeats each. NFE 10: ddm is far below ddpm (Welch p < 0.05,
#: "significant"); NFE 20: ddm is the best mean but within the noise of ddpm ("not significant").
FID = {
    "ddm": {10: [10.0, 10.2, 9.8], 20: [8.0, 12.0, 10.0]},
    "ddpm": {10: [15.0, 15.5, 14.5], 20: [9.0, 13.0, 11.5]},
    "sde": {10: [30.0, 31.0, 29.0], 20: [20.0, 21.0, 22.0]},
}
NFES = [10, 20]
MARKER_TEX = {"significant": r"\sigmark", "not_significant": r"\nsmark"}


@pytest.fixture(scope="module")
def params():
    return load_params(TINY_PARAMS)


def write_metric_files(folder: Path, datasets=("digits",), fid=FID) -> list[Path]:
    paths = []
    for ds in datasets:
        for m, by_nfe in fid.items():
            for nfe, values in by_nfe.items():
                for r, v in enumerate(values):
                    p = folder / "results" / "metrics" / ds / m / f"nfe{nfe}-r{r}.json"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps({
                        "dataset": ds, "method": m, "nfe": nfe, "repeat": r, "fid": v, "num_samples": 500,
                        "extractor": "digits-classifier", "reference": "reference_stats.npz (n=1797)",
                        "weights_sha256": "0" * 64,
                    }))
                    paths.append(p)
    return paths


@pytest.fixture
def metric_files(tmp_path):
    return write_metric_files(tmp_path)


@pytest.fixture
def metrics(metric_files, params):
    return collect(metric_files, params)


def _cell(mean, std, marker=None) -> str:
    text = f"{mean:.2f}"
    if marker:
        text = r"\textbf{" + text + "}" + MARKER_TEX[marker]
    return text + rf" $\pm$ {std:.3f}"


def _welch(a, b):
    return st.ttest_ind(a, b, equal_var=False)


def _tables(tex: str) -> list[str]:
    return re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, flags=re.S)


# --------------------------------------------------------------------------- collect
def test_collect_mean_std(metrics):
    res = metrics["datasets"]["digits"]["results"]
    assert sorted(res) == sorted(FID)
    for m, by_nfe in FID.items():
        assert sorted(res[m]) == [str(n) for n in NFES]
        for nfe, values in by_nfe.items():
            r = res[m][str(nfe)]
            assert r["values"] == values  # in repeat order
            assert r["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert r["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            assert r["n"] == 3 and r["num_samples"] == 500
    assert metrics["datasets"]["digits"]["extractor"] == "digits-classifier"
    assert metrics["preset"] == "embedded" and metrics["ht"] == "constant"
    assert metrics["table1_methods"] == ["ddm", "ddpm", "sde"]


def test_collect_markers_equal_scipy_welch(metrics):
    t1 = metrics["datasets"]["digits"]["table1"]
    assert sorted(t1) == ["10", "20"]
    expected_marker = {10: "significant", 20: "not_significant"}  # by construction
    for nfe in NFES:
        col = t1[str(nfe)]
        means = {m: np.mean(FID[m][nfe]) for m in FID}
        order = sorted(means, key=means.get)
        assert (col["best"], col["second"]) == (order[0], order[1]) == ("ddm", "ddpm")
        ref = _welch(FID["ddm"][nfe], FID["ddpm"][nfe])
        assert col["test"] == "welch"
        assert col["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert col["t"] == pytest.approx(ref.statistic, rel=1e-9)
        assert col["marker"] == ("significant" if ref.pvalue < 0.05 else "not_significant")
        assert col["marker"] == expected_marker[nfe]
    # the construction is what it claims to be
    assert _welch(FID["ddm"][10], FID["ddpm"][10]).pvalue < 0.01
    assert _welch(FID["ddm"][20], FID["ddpm"][20]).pvalue > 0.3


def test_collect_ignores_input_order(metric_files, params):
    assert collect(metric_files, params) == collect(list(reversed(metric_files)), params)


def test_collect_single_repeat_has_no_std_and_no_test(tmp_path, params):
    files = write_metric_files(tmp_path, fid={m: {10: v[10][:1]} for m, v in FID.items()})
    m = collect(files, params)
    r = m["datasets"]["digits"]["results"]["ddm"]["10"]
    assert r["n"] == 1 and r["std"] is None
    assert m["datasets"]["digits"]["table1"]["10"]["marker"] == "untested"
    tex = render_tables(m, PUBLISHED)
    assert "DDM (ours) & 10.00 \\\\" in tex  # no bold, no marker, no +-


# --------------------------------------------------------------------------- render_tables
def test_render_cells_and_markers(metrics):
    tex = render_tables(metrics, PUBLISHED)
    t1 = metrics["datasets"]["digits"]["table1"]
    for m in FID:
        cells = []
        for nfe in NFES:
            marker = t1[str(nfe)]["marker"] if t1[str(nfe)]["best"] == m else None
            cells.append(_cell(np.mean(FID[m][nfe]), np.std(FID[m][nfe], ddof=1), marker))
        line = " & ".join([METHOD_LABELS[m], *cells]) + r" \\"
        assert line in tex.splitlines(), f"row not found: {line}\n{tex}"
    # spelled out, so a wrong formatter cannot hide behind the helper above
    assert r"DDM (ours) & \textbf{10.00}\sigmark $\pm$ 0.200 & \textbf{10.00}\nsmark $\pm$ 2.000 \\" in tex
    assert r"DDPM (VP-SDE, EM) & 15.00 $\pm$ 0.500 & 11.17 $\pm$ 2.021 \\" in tex
    assert "Method $\\backslash$ NFE & 10 & 20 \\\\" in tex
    assert "NFE 10: 500 samples $\\times$ 3, NFE 20: 500 samples $\\times$ 3" in tex
    assert r"reference\_stats.npz (n=1797)" in tex  # underscores escaped
    assert tex.count(r"\sigmark") == 1 + 2  # one cell (+ \providecommand and the caption)
    assert tex.count(r"\nsmark") == 1 + 2


def test_render_is_byte_stable(metrics, metric_files, params):
    a = render_tables(metrics, PUBLISHED)
    b = render_tables(json.loads(json.dumps(metrics)), PUBLISHED)  # as `ddm report` reads it
    c = render_tables(collect(list(reversed(metric_files)), params), PUBLISHED)
    assert a.encode() == b.encode() == c.encode()
    assert a.endswith("\n") and "\r" not in a
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", a)  # no dates


def test_cli_stats_and_report_byte_stable_across_processes(tmp_path, metric_files, metrics):
    """`ddm stats` + `ddm report` (what the rules run); the report twice, with other hash seeds."""
    shutil.copy(TINY_PARAMS, tmp_path / "params.yaml")
    r = run_ddm(tmp_path, "stats", "--inputs", *map(str, reversed(metric_files)), "--out", "metrics.json",
                env={"PYTHONHASHSEED": "1"})
    assert r.returncode == 0, r.output
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    outs = []
    for seed in ("1", "2"):
        r = run_ddm(tmp_path, "report", "--metrics", "metrics.json", "--published", str(PUBLISHED),
                    "--out", f"t{seed}.tex", env={"PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.output
        outs.append((tmp_path / f"t{seed}.tex").read_bytes())
    assert outs[0] == outs[1] == render_tables(metrics, PUBLISHED).encode()


@pytest.mark.parametrize("breakage", ["no mean", "no ht", "no extractor", "no reference", "no results"])
def test_render_raises_on_missing_values(metrics, breakage):
    m = json.loads(json.dumps(metrics))
    d = m["datasets"]["digits"]
    if breakage == "no mean":
        del d["results"]["sde"]["20"]["mean"]
    elif breakage == "no ht":
        del m["ht"]
    elif breakage == "no extractor":
        del d["extractor"]
    elif breakage == "no reference":
        del d["reference"]
    else:
        del d["results"]
    with pytest.raises((KeyError, jinja2.UndefinedError)):
        render_tables(m, PUBLISHED)


def test_template_is_strict(metrics, monkeypatch):
    """The template itself raises on a missing variable (StrictUndefined), it never renders a blank."""
    seen = {}
    original = jinja2.Template.render

    def capture(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", capture)
    good = render_tables(metrics, PUBLISHED)
    monkeypatch.undo()
    from ddm.report import _env

    tpl = _env().get_template("tables.tex.j2")
    assert tpl.render(**seen) == good
    assert isinstance(_env().undefined(), jinja2.StrictUndefined)

    for top in ("preset", "ht", "datasets"):
        ctx = {k: v for k, v in seen.items() if k != top}
        with pytest.raises(jinja2.UndefinedError):
            tpl.render(**ctx)
    for key in ("name", "nfes", "rows", "samples", "extractor", "reference", "reported"):
        ds = [{k: v for k, v in seen["datasets"][0].items() if k != key}]
        with pytest.raises(jinja2.UndefinedError):
            tpl.render(**{**seen, "datasets": ds})
    ds = [{**seen["datasets"][0], "rows": [{"label": "X"}]}]  # a row without cells
    with pytest.raises(jinja2.UndefinedError):
        tpl.render(**{**seen, "datasets": ds})


def test_published_rows_only_for_their_dataset(tmp_path, params):
    files = write_metric_files(tmp_path, datasets=("digits", "cifar10", "celebahq256"))
    tex = render_tables(collect(files, params), PUBLISHED)
    tables = _tables(tex)
    assert len(tables) == 3
    by_name = {re.search(r"\\caption\{Unconditional generation on (.*?):", t).group(1): t for t in tables}
    assert set(by_name) == {"Digits (8$\\times$8)", "CIFAR-10", "CelebA-HQ-256"}

    digits = by_name["Digits (8$\\times$8)"]
    assert r"\reported" not in digits and "LSGM" not in digits

    cifar = by_name["CIFAR-10"]
    reported_lines = [line for line in cifar.splitlines() if r"\reported{}" in line and "&" in line]
    assert [line.split("\\reported")[0] for line in reported_lines] == ["DDPM", "SDE", "LSGM", "CLD", "DDM (paper)"]
    # the published values at the measured NFE columns (10, 20); others are not shown
    assert re.search(r"^DDPM\\reported\{\}.* & 296\.84 & 140\.68 \\\\$", cifar, flags=re.M)
    assert re.search(r"^DDM \(paper\)\\reported\{\}.* & 13\.92 & 8\.92 \\\\$", cifar, flags=re.M)
    assert "38.36" not in cifar and "3.17" not in cifar  # NFE 50 / 1000: not measured here
    assert r"Rows marked \reported{} are reported in the DDM paper" in cifar
    # measured rows carry no \reported
    assert all(r"\reported" not in line for line in cifar.splitlines() if line.startswith(("DDM (ours)", "SDE (VE")))

    celeba = by_name["CelebA-HQ-256"]
    labels = [line.split("\\reported")[0] for line in celeba.splitlines() if r"\reported{}" in line and "&" in line]
    assert labels == ["SDE", "LSGM", "CLD", "DDM (paper)"]  # no DDPM row for CelebA-HQ in Table 1
    assert "Zhao et al." not in tex and "Suvorov" not in tex  # Table 2 rows never enter Table 1


def test_published_rows_show_params_in_parentheses(tmp_path, params):
    files = write_metric_files(tmp_path, datasets=("cifar10",))
    tex = render_tables(collect(files, params), PUBLISHED)
    assert re.search(r"^DDPM\\reported\{\}\s*\{?\(\}?143M\{?\)\}?\s*&", tex, flags=re.M), tex


def test_published_csv_missing(metrics, tmp_path):
    with pytest.raises(FileNotFoundError, match="published results CSV not found"):
        render_tables(metrics, tmp_path / "nope.csv")


# --------------------------------------------------------------------------- LaTeX
DOC = r"""\documentclass{article}
\usepackage{amssymb}
\begin{document}
\input{tables.tex}
\end{document}
"""


def compile_tables(tex: str, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tables.tex").write_text(tex)
    (folder / "doc.tex").write_text(DOC)
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_tables_compile_with_pdflatex(tmp_path, params):
    files = write_metric_files(tmp_path / "m", datasets=("digits", "cifar10"))
    r = compile_tables(render_tables(collect(files, params), PUBLISHED), tmp_path / "tex")
    assert r.returncode == 0, r.stdout[-3000:]
    log = (tmp_path / "tex" / "doc.log").read_text(errors="replace")
    assert "Undefined control sequence" not in log
    assert (tmp_path / "tex" / "doc.pdf").stat().st_size > 1000
