"""ddm.report: collect (mean +- std, Table 1 markers; ddm.report.collect) and render_tables (LaTeX;
ddm.report.tables) on hand-written metric files with fixed FID values, checked against numpy /
scipy.stats.ttest_ind (Welch)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
from scipy import stats as st

from conftest import REPO, TINY_PARAMS, run_ddm
from ddm.validation import load_params
from ddm.io import load_json, save_json
from ddm.report.collect import collect, metric_records, records_csv
from ddm.report.labels import METHOD_LABELS
from ddm.report.tables import render_tables
from ddm.resources import PUBLISHED_CSV

PUBLISHED = PUBLISHED_CSV  # the package's published results (ddm/data/published.csv)

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
                    save_json({  # as `ddm evaluate` writes it (with its checksum)
                        "dataset": ds, "method": m, "nfe": nfe, "repeat": r, "fid": v, "num_samples": 500,
                        "extractor": "digits-classifier", "reference": "reference_stats.npz (n=1797)",
                        "weights_sha256": "0" * 64,
                    }, p)
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
    assert "DDM (ours) & -- & 10.00 \\\\" in tex  # no bold, no marker, no +-; no model files: no Param


# --------------------------------------------------------------------------- the tidy table (metrics.csv)
def _odd_fid(seed: int = 3) -> dict:
    """FIDs whose shortest text needs up to 17 digits (and one single-repeat group)."""
    rng = np.random.default_rng(seed)
    fid = {m: {n: [float(x) for x in rng.uniform(3, 60, 4)] for n in NFES} for m in FID}
    fid["ddm"][10] = [0.1 + 0.2, 1 / 3, 2.0 ** -40, 123456789.01234567]
    fid["sde"][20] = [float(np.nextafter(20.0, 21.0))]
    return fid


def test_metrics_csv_is_the_records_one_row_each(tmp_path):
    from ddm.report.collect import RECORD_COLUMNS, read_records_csv

    files = write_metric_files(tmp_path, datasets=("digits", "cifar10"), fid=_odd_fid())
    _stamp(files[::2], ["2026-11-30T06:25:13Z"] * len(files[::2]))  # older files have no computed_at
    text = records_csv(metric_records(reversed(files)))
    assert text == records_csv(metric_records(files)) and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == ",".join(RECORD_COLUMNS) and len(lines) == 1 + len(files)
    (tmp_path / "metrics.csv").write_text(text)
    table = read_records_csv(tmp_path / "metrics.csv")
    assert list(table.columns) == list(RECORD_COLUMNS) and len(table) == len(files)
    keys = list(zip(table["dataset"], table["method"], table["nfe"], table["repeat"]))
    assert keys == sorted(keys)  # sorted rows
    rows = {k: row for k, row in zip(keys, table.to_dict("records"))}
    assert len(rows) == len(files)
    for p in files:
        record = json.loads(p.read_text())
        row = rows[(record["dataset"], record["method"], record["nfe"], record["repeat"])]
        cells = {c: (None if isinstance(v, float) and np.isnan(v) else v) for c, v in row.items()}
        assert cells == {c: record.get(c) for c in RECORD_COLUMNS}, p  # floats exactly: they round-trip
        assert repr(cells["fid"]) == repr(record["fid"]) and f",{record['fid']!r}," in text
    assert table.equals(read_records_csv(io.StringIO(table.to_csv(index=False))))


def test_metrics_json_summaries_are_pandas_groupby_of_the_csv(tmp_path, params):
    import pandas as pd

    files = write_metric_files(tmp_path, fid=_odd_fid())
    (tmp_path / "metrics.csv").write_text(records_csv(metric_records(files)))
    table = pd.read_csv(tmp_path / "metrics.csv")  # as anyone would read it
    results = json.loads(json.dumps(collect(files, params)))["datasets"]["digits"]["results"]
    groups = table.groupby(["dataset", "method", "nfe"])["fid"]
    numpy_way = groups.agg(values=list, mean=lambda s: np.mean(s.to_numpy()),
                           std=lambda s: np.std(s.to_numpy(), ddof=1) if len(s) > 1 else np.nan)
    pandas_way = groups.agg(["mean", "std", "size"])  # pandas' own reductions (another summation order)
    assert len(numpy_way) == sum(len(v) for v in results.values()) == sum(len(v) for v in _odd_fid().values())
    for (ds, m, nfe), row in numpy_way.iterrows():
        res = results[m][str(nfe)]
        assert res["values"] == row["values"] == _odd_fid()[m][nfe]
        std = None if np.isnan(row["std"]) else row["std"]  # metrics.json: null for one repeat
        assert (res["mean"], res["std"]) == (row["mean"], std)  # the same numbers, bit for bit
        mine = pandas_way.loc[(ds, m, nfe)]
        assert res["n"] == mine["size"] == table.query("method == @m and nfe == @nfe").shape[0]
        assert res["mean"] == pytest.approx(mine["mean"], rel=1e-13)
        assert res["std"] is None if res["n"] == 1 else res["std"] == pytest.approx(mine["std"], rel=1e-12)
        assert res["num_samples"] == 500


def test_collect_takes_the_table_or_the_files(metric_files, params, metrics):
    from ddm.report.collect import read_records_csv, summarize_records

    assert collect(metric_records(metric_files), params) == metrics
    csv_path = metric_files[0].parent / "metrics.csv"
    csv_path.write_text(records_csv(metric_records(metric_files)))
    assert collect(read_records_csv(csv_path), params) == metrics
    summary = summarize_records(metric_records(metric_files))
    assert list(summary.columns) == ["values", "mean", "std", "n", "num_samples", "kid"]
    assert summary.index.names == ["dataset", "method", "nfe"] and summary.index.is_monotonic_increasing


# --------------------------------------------------------------------------- render_tables
def test_render_cells_and_markers(metrics):
    tex = render_tables(metrics, PUBLISHED)
    t1 = metrics["datasets"]["digits"]["table1"]
    for m in FID:
        cells = []
        for nfe in NFES:
            marker = t1[str(nfe)]["marker"] if t1[str(nfe)]["best"] == m else None
            cells.append(_cell(np.mean(FID[m][nfe]), np.std(FID[m][nfe], ddof=1), marker))
        line = " & ".join([METHOD_LABELS[m], "--", *cells]) + r" \\"
        assert line in tex.splitlines(), f"row not found: {line}\n{tex}"
    # spelled out, so a wrong formatter cannot hide behind the helper above
    assert r"DDM (ours) & -- & \textbf{10.00}\sigmark $\pm$ 0.200 & \textbf{10.00}\nsmark $\pm$ 2.000 \\" in tex
    assert r"DDPM (VP-SDE, EM) & -- & 15.00 $\pm$ 0.500 & 11.17 $\pm$ 2.021 \\" in tex
    assert "Method $\\backslash$ NFE & Param & 10 & 20 \\\\" in tex
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
    """`ddm stats` + `ddm report` (what the rules run); each twice, with other hash seeds (and
    the stats' inputs in another order): the same bytes of metrics.json, metrics.csv, tables.tex."""
    shutil.copy(TINY_PARAMS, tmp_path / "params.yaml")
    stats = []
    for seed, inputs in (("1", reversed(metric_files)), ("2", metric_files)):
        r = run_ddm(tmp_path, "stats", "--inputs", *map(str, inputs), "--out", f"m{seed}.json",
                    "--csv", f"m{seed}.csv", env={"PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.output
        stats.append([(tmp_path / f"m{seed}.{ext}").read_bytes() for ext in ("json", "csv")])
    assert stats[0] == stats[1]
    assert stats[0][1] == records_csv(metric_records(metric_files)).encode()
    (tmp_path / "metrics.json").write_bytes(stats[0][0])
    written = load_json(tmp_path / "metrics.json", "metrics file", "ddm stats")  # checksum verified, and dropped
    prov = written.pop("provenance")  # tested below (test_provenance_*)
    assert written == json.loads(json.dumps(metrics))
    metrics = {**metrics, "provenance": prov}
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
    from ddm.report.tables import template_env

    tpl = template_env().get_template("tables.tex.j2")
    assert tpl.render(**seen) == good
    assert isinstance(template_env().undefined(), jinja2.StrictUndefined)

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


def test_published_rows_show_params_in_the_param_column(tmp_path, params):
    files = write_metric_files(tmp_path, datasets=("cifar10",))
    tex = render_tables(collect(files, params), PUBLISHED)
    assert re.search(r"^DDPM\\reported\{\}\s*&\s*143M\s*&", tex, flags=re.M), tex


def test_published_csv_missing(metrics, tmp_path):
    with pytest.raises(FileNotFoundError, match="published results CSV not found"):
        render_tables(metrics, tmp_path / "nope.csv")


# --------------------------------------------------------------------------- Tables 4 and 5 by role
#: FID per ablation method: NFE 10 and 50, one repeat (the pipeline's ablation_nfe).
ABLATION_FID = {m: {10: [11.0 + i], 50: [5.0 + i / 3]} for i, m in enumerate(
    ["ht_constant", "ht_linear", "ht_quadratic", "ht_exp", "ht_sin", "w_unit", "w_exp", "arch_conv", "loss_l1"])}
#: Tables 4 and 5 as the name-based report wrote them (before roles): the rows must not change.
TABLE4_GOLDEN = r"""\caption{Choices of $\mathbf{h}_t$ on Digits (8$\times$8) (Table 4): FID$\downarrow$. $^\dagger$: the same training config as another row's, so one network, trained once and sampled for both rows ($\mathbf{c}$: the network of DDM (ours)).\ddmprovenance}
\begin{tabular}{lrr}
\hline
$\mathbf{h}_t$ $\backslash$ NFE & 10 & 50 \\
\hline
$\mathbf{c}$$^\dagger$ & 11.00 & 5.00 \\
$\mathbf{a}t + \mathbf{c}$ & 12.00 & 5.33 \\
$\mathbf{a}t^2 + \mathbf{b}t + \mathbf{c}$ & 13.00 & 5.67 \\
$e^{\mathbf{a}t} + \mathbf{c}$ & 14.00 & 6.00 \\
$\sin \mathbf{a}t$ & 15.00 & 6.33 \\
\hline
\end{tabular}"""
TABLE5_GOLDEN = r"""\caption{Hyperparameter, architecture and loss analysis on Digits (8$\times$8) (Table 5): 10-step FID$\downarrow$. Mean $\pm$ std over the sample sets of each row's one network, which understates the variance of retraining.\ddmprovenance}
\begin{tabular}{llr}
\hline
 & Setting & 10-step FID \\
\hline
Hyperparameter & $\lambda_1 = 1$, $\lambda_2 = 1$ & 16.00 \\
Hyperparameter & $\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$ & 10.00 $\pm$ 0.200 \\
Hyperparameter & $\lambda_1 = e^t$, $\lambda_2 = e^{1-t}$ & 17.00 \\
Architecture & U-Net+conv & 18.00 \\
Architecture & U-Net+decoder & 10.00 $\pm$ 0.200 \\
Loss type & $\ell_1$ & 19.00 \\
Loss type & $\ell_2$ & 10.00 $\pm$ 0.200 \\
\hline
\end{tabular}"""


def test_tables_4_and_5_from_roles_are_golden(tmp_path, params):
    """The shipped roles (params-tiny.yaml) give Tables 4 and 5 byte for byte as before."""
    tex = render_tables(collect(write_metric_files(tmp_path, fid={**FID, **ABLATION_FID}), params), PUBLISHED)
    assert TABLE4_GOLDEN in tex and TABLE5_GOLDEN in tex
    some = {**FID, **{m: ABLATION_FID[m] for m in ("ht_linear", "w_exp")}}
    tex = render_tables(collect(write_metric_files(tmp_path / "some", fid=some), params), PUBLISHED)
    assert r"$\mathbf{a}t + \mathbf{c}$ & 12.00 & 5.33 \\" in tex and r"$\mathbf{c}$ & " not in tex
    assert "Architecture & U-Net+conv & -- \\\\" in tex  # Table 5 shows every row once one is measured
    assert "Table 4" not in render_tables(collect(write_metric_files(tmp_path / "t1", fid=FID), params), PUBLISHED)


def test_rows_follow_roles_and_labels_not_names(params):
    """Renamed entries keep their rows; `label:` replaces the derived label; the Table 5 row of
    the main model comes with each group; Fig. 3 shows the fig3 model, its Table 1 peer and DDM."""
    from ddm.roles import fig3_methods, table_rows

    renamed = json.loads(json.dumps(params))
    ab = renamed["ablation_methods"]
    ab["h_sine"] = ab.pop("ht_sin")
    ab["lam_one"] = {**ab.pop("w_unit"), "label": "unit weights"}
    ab["vp_two_heads"] = ab.pop("ddpm_x0")
    rows = table_rows(renamed)
    assert rows["table4"][-1] == {"method": "h_sine", "label": r"$\sin \mathbf{a}t$"}
    assert rows["table5"][:3] == [
        {"group": "Hyperparameter", "label": "unit weights", "method": "lam_one"},
        {"group": "Hyperparameter", "label": r"$\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$", "method": "ddm"},
        {"group": "Hyperparameter", "label": r"$\lambda_1 = e^t$, $\lambda_2 = e^{1-t}$", "method": "w_exp"}]
    assert fig3_methods(params) == ["ddpm", "ddpm_x0", "ddm"]
    assert fig3_methods(renamed) == ["ddpm", "vp_two_heads", "ddm"]
    ab["ht_main"] = {"process": "ddm", "ht": "main", "role": "table4", "sampler": "ddm", "grid": "uniform"}
    assert table_rows({**renamed, "ht": "exp"})["table4"][-1]["label"] == r"$e^{\mathbf{a}t} + \mathbf{c}$"


def test_a_changed_main_sampler_keeps_the_table5_labels(params):
    """Table 5 compares what was trained: the main model's sampler changed (e.g. `dvc exp run -S
    methods.ddm.sampler=ddm_deterministic`) leaves every row and label as it was."""
    from ddm.roles import table_rows

    changed = json.loads(json.dumps(params))
    changed["methods"]["ddm"]["sampler"] = "ddm_deterministic"
    assert table_rows(changed) == table_rows(params)


@pytest.mark.parametrize("entry, message", [
    ({"process": "vp", "role": "table4", "sampler": "vp_em", "grid": "sde"}, "role table4 (a choice of h_t) needs process ddm"),
    ({"process": "ddm", "role": "table5", "sampler": "ddm", "grid": "uniform"}, "does not differ from the main DDM model 'ddm'"),
    ({"process": "ddm", "weighting": "unit", "head": "conv", "role": "table5", "sampler": "ddm", "grid": "uniform"},
     "differs from the main DDM model 'ddm' in head, weighting"),
    ({"process": "ddm", "clip": 1.0, "role": "table5", "sampler": "ddm", "grid": "uniform"}, "no Table 5 label for clip: 1.0"),
])
def test_a_role_without_a_row_is_an_error(params, entry, message):
    from ddm.config import ConfigError
    from ddm.roles import table_rows

    bad = json.loads(json.dumps(params))
    bad["ablation_methods"]["odd"] = entry
    with pytest.raises(ConfigError, match=re.escape(message)):
        table_rows(bad)


def test_a_label_makes_a_table5_row_of_any_change(params):
    """Several settings, or one without a label of its own: an explicit `label:` names the row;
    it joins the group of the first setting that has one (else "Other", without a main row)."""
    from ddm.roles import table_rows

    p = json.loads(json.dumps(params))
    p["ablation_methods"]["both"] = {"process": "ddm", "weighting": "unit", "head": "conv", "role": "table5",
                                     "sampler": "ddm", "grid": "uniform", "label": "unit, conv"}
    p["ablation_methods"]["clipped"] = {"process": "ddm", "clip": 1.0, "role": "table5", "sampler": "ddm",
                                        "grid": "uniform", "label": "clip 1"}
    rows = [(r["group"], r["method"]) for r in table_rows(p)["table5"]]
    assert rows == [("Hyperparameter", "w_unit"), ("Hyperparameter", "both"), ("Hyperparameter", "ddm"),
                    ("Hyperparameter", "w_exp"), ("Architecture", "arch_conv"), ("Architecture", "ddm"),
                    ("Loss type", "loss_l1"), ("Loss type", "ddm"), ("Other", "clipped")]


def test_table1_rows_take_a_method_label_from_params(tmp_path, params):
    """A Table 1 entry's own `label:` names its row (a renamed entry keeps a readable row); without
    one, the project's label of that name, else the escaped name."""
    p = json.loads(json.dumps(params))
    p["methods"] = {"ddm": {**p["methods"]["ddm"], "label": r"DDM, linear $h_t$"},
                    "ddpm": p["methods"]["ddpm"], "ve_sde_v2": p["methods"]["sde"]}
    fid = {"ddm": FID["ddm"], "ddpm": FID["ddpm"], "ve_sde_v2": FID["sde"]}
    m = collect(write_metric_files(tmp_path, fid=fid), p)
    assert m["method_labels"] == {"ddm": r"DDM, linear $h_t$"}
    rows = [line.split(" & ")[0] for line in render_tables(m, PUBLISHED).splitlines()
            if line.endswith(r"\\") and " & " in line]
    assert {r"DDM, linear $h_t$", METHOD_LABELS["ddpm"], r"ve\_sde\_v2"} <= set(rows), rows
    assert "method_labels" not in collect(write_metric_files(tmp_path / "plain"), params)


# --------------------------------------------------------------------------- LaTeX
DOC = r"""\documentclass{article}
\usepackage{amssymb}
\usepackage{graphicx}
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


# --------------------------------------------------------------------------- escaping
def test_latex_escape_every_special():
    from ddm.report.labels import latex_escape

    assert latex_escape("a_b & 50% #1 $x$ {y} ~ ^ \\") == \
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    assert latex_escape("DDM (paper)") == "DDM (paper)"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_names_with_latex_specials_compile(tmp_path, params):
    """A method key with `_` (no label) and published rows with `&`, `%`, `#`, `_` in name and params."""
    fid = {**FID, "ddm_v2_x": FID["ddm"]}
    files = write_metric_files(tmp_path / "m", fid=fid)
    params = {**params, "methods": {**params["methods"], "ddm_v2_x": params["methods"]["ddm"]}}
    published = tmp_path / "published.csv"
    published.write_text(PUBLISHED.read_text() + "".join(
        f'1,digits,Yun & Lin 100% net_v2 #1,1M & 5%,{n},{v},"test"\n' for n, v in ((10, 1.5), (20, 2.5))))
    tex = render_tables(collect(files, params), published)
    assert r"ddm\_v2\_x & " in tex
    row = next(line for line in tex.splitlines() if line.startswith("Yun"))
    assert row.startswith(r"Yun \& Lin 100\% net\_v2 \#1\reported{}") and r"1M \& 5\%" in row
    assert row.endswith(r" & 1.50 & 2.50 \\")
    r = compile_tables(tex, tmp_path / "tex")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Undefined control sequence" not in (tmp_path / "tex" / "doc.log").read_text(errors="replace")


# --------------------------------------------------------------------------- provenance
def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    r = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_commit_and_dirty(tmp_path):
    from ddm.report.provenance import git_state

    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    for rel in ("params.yaml", "reports/tables.tex", "dvc.lock"):
        (repo / rel).write_text("a\n")
    _git(repo, "init", "-q")
    assert git_state(repo) == {"commit": None, "dirty": None}  # no commit yet
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "x")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("u\n")  # untracked files do not count (git describe --dirty)
    for rel in ("reports/tables.tex", "dvc.lock"):  # the pipeline's own tracked products do not count
        (repo / rel).write_text("b\n")
    assert git_state(repo) == {"commit": head, "dirty": False}
    assert git_state(repo / "reports") == {"commit": head, "dirty": False}  # from a subfolder: the same
    (repo / "params.yaml").write_text("b\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    assert git_state(repo / "reports") == {"commit": head, "dirty": True}


def _stamp(files: list[Path], stamps: list[str]) -> None:
    for p, s in zip(files, stamps):
        r = load_json(p, "metric file", "ddm evaluate")
        save_json({**r, "computed_at": s}, p)


def test_provenance_dates_come_from_the_metric_files(metric_files, params, tmp_path):
    from ddm.report.provenance import package_versions, provenance

    stamps = [f"2026-11-{d:02d}T10:00:00Z" for d in range(1, len(metric_files) + 1)]
    _stamp(metric_files, stamps)
    prov = provenance(metric_files, params, tmp_path)
    assert (prov["computed_first"], prov["computed_last"]) == (stamps[0], stamps[-1])
    assert prov["git_commit"] is None and prov["git_dirty"] is None
    assert prov["versions"] == package_versions()
    assert re.fullmatch(r"[0-9a-f]{12}", prov["params_hash"])
    assert provenance(list(reversed(metric_files)), params, tmp_path) == prov
    # without computed_at (files of an older `ddm evaluate`): the files' modification times
    files = write_metric_files(tmp_path / "old")
    for i, p in enumerate(files):
        os.utime(p, (1_790_000_000 + i, 1_790_000_000 + i))
    old = provenance(files, params, tmp_path)
    utc = [datetime.fromtimestamp(1_790_000_000 + i, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for i in (0, len(files) - 1)]
    assert [old["computed_first"], old["computed_last"]] == utc


def test_params_hash_follows_what_the_numbers_depend_on(params):
    from ddm.report.provenance import params_hash

    pairs = [("digits", m) for m in params["methods"]]
    base = params_hash(params, pairs)
    assert params_hash(params, list(reversed(pairs)) + pairs) == base
    changed = json.loads(json.dumps(params))
    changed["ht"] = "linear"  # resolves into the main DDM model
    assert params_hash(changed, pairs) != base
    changed = json.loads(json.dumps(params))
    changed["presets"]["embedded"]["digits"]["fid"]["num_samples"] += 1
    assert params_hash(changed, pairs) != base
    changed = json.loads(json.dumps(params))
    changed["ablation_methods"]["w_exp"]["weighting"] = "unit"  # not measured here
    assert params_hash(changed, pairs) == base


PROV = {"git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": True, "params_hash": "a1b2c3d4e5f6",
        "computed_first": "2026-11-29T23:00:00Z", "computed_last": "2026-11-30T01:02:03Z",
        "versions": {"torch": "2.14.1+cu128", "snakemake": "9.27.1", "dvc": "3.67.1", "torch-fidelity": "0.4.0"}}


def test_tables_carry_the_provenance_line(metrics):
    tex = render_tables({**metrics, "provenance": PROV}, PUBLISHED)
    assert ("% Provenance: commit 0123456789abcdef0123456789abcdef01234567, dirty; params a1b2c3d4e5f6; computed "
            "2026-11-29T23:00:00Z to 2026-11-30T01:02:03Z; torch 2.14.1+cu128, snakemake 9.27.1, dvc 3.67.1, "
            "torch-fidelity 0.4.0.") in tex.splitlines()
    assert (r"\renewcommand{\ddmprovenance}{\newline{\footnotesize Provenance: commit 0123456789ab, dirty, params "
            r"a1b2c3d4e5f6, computed 2026-11-29 to 2026-11-30; torch 2.14.1+cu128, snakemake 9.27.1, dvc 3.67.1, "
            r"torch-fidelity 0.4.0.}}") in tex.splitlines()
    assert all(re.search(r"\\ddmprovenance\}\n\\begin\{tabular\}", t) for t in _tables(tex))
    # re-rendering is byte-identical (the date is the metric files', not the clock's)
    assert render_tables(json.loads(json.dumps({**metrics, "provenance": PROV})), PUBLISHED) == tex
    # without provenance (metrics of an older `ddm stats`) the line is empty, and the tables still compile
    plain = render_tables(metrics, PUBLISHED)
    assert "% Provenance" not in plain and r"\providecommand{\ddmprovenance}{}" in plain


# --------------------------------------------------------------------------- the PDF report
def test_report_pages_from_figure_names():
    from ddm.report.pdf import ReportError, report_pages

    pages = report_pages(["f/fid_vs_nfe_digits.png", "f/samples_digits_ddm_x_nfe20.png", "f/samples_digits_ddm_x_nfe3.png",
                          "f/fig3_digits.png", "f/samples_digits_ddpm_nfe3.png", "f/samples_digits_ddpm-s2_nfe3.png"])
    assert [p["files"] for p in pages] == [["fid_vs_nfe_digits.png"], ["samples_digits_ddm_x_nfe3.png", "samples_digits_ddm_x_nfe20.png"],
                                           ["samples_digits_ddpm_nfe3.png"], ["samples_digits_ddpm-s2_nfe3.png"],
                                           ["fig3_digits.png"]]
    assert "Samples of DDPM (VP-SDE, EM), network 2 on" in pages[3]["caption"]  # a grid per training seed
    assert r"ddm\_x on Digits (8$\times$8) at NFE 3, 20" in pages[1]["caption"]
    assert report_pages(["f/convergence_digits.png", "f/new_plot.png"]) == [
        {"files": ["convergence_digits.png"], "caption": "FID against training step on Digits (8$\\times$8)."},
        {"files": ["new_plot.png"], "caption": r"reports/figures/new\_plot.png"}]
    with pytest.raises(ReportError, match=r"notes.txt: not a figure pdflatex can include"):
        report_pages(["f/notes.txt"])


def _report_inputs(folder: Path, metrics: dict) -> tuple[Path, Path, list[Path]]:
    from ddm.report.figures import fid_plot

    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "tables.tex").write_text(render_tables(metrics, PUBLISHED))
    return folder / "metrics.json", folder / "tables.tex", [fid_plot(metrics, "digits", folder / "figures" / "fid_vs_nfe_digits.png")]


def test_report_pdf_without_latex_is_a_placeholder(tmp_path, metrics):
    from ddm.report.pdf import LATEX_PACKAGES, build_report_pdf

    m, tables, figures = _report_inputs(tmp_path, {**metrics, "provenance": PROV})
    out = build_report_pdf(REPO / "reports" / "report.tex.j2", tables, m, figures, tmp_path / "report.pdf", None)
    data = out.read_bytes()
    assert data[:5] == b"%PDF-" and b"/Count 1" in data
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True).stdout
        assert "was not built" in text and LATEX_PACKAGES.split()[0] in " ".join(text.split())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_report_pdf_is_byte_stable_and_fails_clearly(tmp_path, metrics):
    from ddm.report.pdf import ReportError, build_report_pdf, find_latex

    m, tables, figures = _report_inputs(tmp_path, {**metrics, "provenance": PROV})
    template = REPO / "reports" / "report.tex.j2"
    a = build_report_pdf(template, tables, m, figures, tmp_path / "a.pdf", find_latex()).read_bytes()
    b = build_report_pdf(template, tables, m, figures, tmp_path / "b.pdf", find_latex()).read_bytes()
    assert a == b and a[:5] == b"%PDF-"
    assert b"/CreationDate (D:20261130010203" in a  # the numbers' date, not the build's
    tables.write_text(tables.read_text() + "\\undefinedmacro\n")
    with pytest.raises(ReportError, match=r"pdflatex failed on report.tex: .*Undefined control sequence"):
        build_report_pdf(template, tables, m, figures, tmp_path / "c.pdf", shutil.which("pdflatex"))
    assert not (tmp_path / "c.pdf").exists()


def test_tile_lays_out_images_as_torchvision_make_grid():
    """ddm.report.figures.tile (figure jobs do not import torchvision: seconds of start-up each) gives
    make_grid's layout: grey repeated to RGB, padding around and between, a short last row."""
    from torchvision.utils import make_grid

    from ddm.report.figures import tile

    g = torch.Generator().manual_seed(0)
    for shape, nrow, padding, value in [((64, 1, 8, 8), 8, 1, 255), ((13, 3, 5, 7), 4, 2, 0), ((2, 1, 3, 3), 1, 0, 9)]:
        x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        assert torch.equal(tile(x, nrow, padding, value), make_grid(x, nrow=nrow, padding=padding, pad_value=value))
    x = torch.rand((5, 3, 4, 4), generator=g)
    assert torch.equal(tile(x, 8, 1, 0.5), make_grid(x, nrow=8, padding=1, pad_value=0.5))


def test_table2_caption_names_the_rows_below_their_trivial_reference():
    """Issue 22: where a measured row of Table 2 does not beat its task's trivial reference, the caption
    says so (task, rows, reference), and for PSNR says why a sampler may not: an exact posterior
    sample has twice the posterior mean's expected squared error."""
    from ddm.report.task_tables import _below_reference_caption

    def cond(sr_ddm: float) -> dict:
        res = lambda v: {"5": {"mean": v}, "10": {"mean": v}, "20": {"mean": v - 100}}  # NFE 20: not Table 2's
        return {"methods": ["ddm", "ddpm"], "labels": {"ddm": "DDM", "ddpm": "DDPM"}, "table2_nfe": [5, 10],
                "tasks": {"saliency": {"metric": "mae", "higher_is_better": False, "references": {"all_background": 0.147},
                                       "results": {"ddm": res(0.09), "ddpm": res(0.4)}},
                          "super_resolution": {"metric": "psnr", "higher_is_better": True, "references": {"bicubic": 34.01},
                                               "results": {"ddm": res(sr_ddm), "ddpm": res(12.0)}},
                          # the real test images are the metric's floor, not a reference to beat
                          "inpainting": {"metric": "fid", "higher_is_better": False,
                                         "references": {"mean_fill": 166.8, "test_images": 1.96},
                                         "results": {"ddm": res(45.3), "ddpm": res(55.7)}}}}

    text = _below_reference_caption(cond(28.4))
    assert "saliency detection: DDPM (against all background, 0.1470)" in text
    assert "super-resolution: DDM, DDPM (against bicubic, 34.01)" in text
    assert "twice its expected squared error (3.01~dB lower PSNR)" in text
    assert "inpainting" not in text
    text = _below_reference_caption(cond(34.5))
    assert "super-resolution: DDPM (against bicubic" in text and "DDM, DDPM" not in text
    calm = cond(34.5)
    calm["tasks"]["saliency"]["results"]["ddpm"] = calm["tasks"]["saliency"]["results"]["ddm"]
    calm["tasks"]["super_resolution"]["results"]["ddpm"] = calm["tasks"]["super_resolution"]["results"]["ddm"]
    assert _below_reference_caption(calm) == ""
