"""ddm.claims: a verdict per claim of the paper (Tables 1-5, Fig. 3) from reports/metrics.json.

Each claim gets a fixture where it holds ("reproduced"), the same fixture with the ordering
reversed ("not reproduced") and one without the table it needs ("not tested in this run"). The
fixtures are reports/metrics.json as ``ddm stats`` writes it: values per sample set, their mean,
std and n, and Table 1's / Table 2's t-test markers computed by ddm.report.collect's own code."""

from __future__ import annotations

import copy
import json
import re

import pytest

from conftest import REPO, TINY_PARAMS, run_ddm
from ddm import claims
from ddm.claims import NOT_REPRODUCED, NOT_TESTED, REPRODUCED, render_claims, verdicts
from ddm.validation import load_params
from ddm.io import save_json
from ddm.report.collect import _markers
from ddm.roles import table_rows
from ddm.stats import summarize

#: FID per (method, NFE), 3 sample sets each: every claim of Tables 1, 4 and 5 holds.
FID = {
    "ddm": {10: [10.0, 10.2, 9.8], 20: [8.0, 8.1, 7.9], 1000: [6.0, 6.2, 5.8]},
    "ddpm": {10: [40.0, 41.0, 39.0], 20: [30.0, 31.0, 29.0]},
    "sde": {10: [80.0, 81.0, 79.0], 20: [60.0, 61.0, 59.0]},
    "ht_constant": {10: [10.0, 10.2, 9.8], 50: [7.0, 7.1, 6.9]},
    "ht_linear": {10: [12.0, 12.2, 11.8], 50: [8.0, 8.1, 7.9]},
    "ht_sin": {10: [30.0, 31.0, 29.0], 50: [20.0, 21.0, 19.0]},
    "w_unit": {10: [9.9, 10.1, 9.7]},  # below the default, within the noise: a tie
    "w_exp": {10: [11.0, 11.2, 10.8]},
    "arch_conv": {10: [14.0, 14.2, 13.8]},
    "loss_l1": {10: [13.0, 13.2, 12.8]},
}
#: Fig. 3: the x0 MSE per reverse step.
FIG3 = {"ddpm": [0.5, 0.3, 0.0], "ddpm_x0": [0.3, 0.2, 0.0], "ddm": [0.2, 0.1, 0.0]}
#: Tables 2 and 3: task -> method -> NFE -> values (higher is better for PSNR only).
TASKS = {
    "saliency": {"ddm": {5: [0.05, 0.051], 10: [0.05, 0.049, 0.0495], 20: [0.0495, 0.0497, 0.0493],
                         100: [0.0498, 0.0496, 0.05]},
                 "ddpm": {5: [0.4, 0.41], 10: [0.38, 0.37, 0.375], 20: [0.3, 0.31, 0.29], 100: [0.2, 0.21, 0.19]}},
    "super_resolution": {"ddm": {5: [27.0, 27.1], 10: [27.5, 27.4, 27.45], 20: [27.4, 27.5, 27.45],
                                 100: [27.6, 27.5, 27.55]},
                         "ddpm": {5: [9.0, 9.1], 10: [12.0, 12.1, 12.05], 20: [13.0, 13.1, 12.9],
                                  100: [15.0, 15.1, 14.9]}},
    "inpainting": {"ddm": {5: [6.0, 6.1], 10: [5.5, 5.6, 5.55], 20: [5.4, 5.5, 5.45], 100: [5.4, 5.5, 5.45]},
                   "ddpm": {5: [110.0, 112.0], 10: [95.0, 96.0, 95.5], 20: [90.0, 91.0, 90.5], 100: [64.0, 65.0, 64.5]}},
}
HIGHER_IS_BETTER = {"saliency": False, "super_resolution": True, "inpainting": False}
METRIC = {"saliency": "mae", "super_resolution": "psnr", "inpainting": "fid"}


def _result(values: list[float], num_samples: int = 500) -> dict:
    s = summarize(values)
    return {"values": values, "mean": s["mean"], "std": s["std"] if s["n"] > 1 else None, "n": s["n"],
            "num_samples": num_samples}


def _results(table: dict) -> dict:
    return {m: {str(n): _result(v, 100 if n == 1000 else 500) for n, v in by.items()} for m, by in table.items()}


def make_metrics(fid=FID, fig3=FIG3, tasks=TASKS) -> dict:
    """reports/metrics.json (plus Fig. 3's curves, as `ddm report --fig3` adds them) from values."""
    params = load_params(TINY_PARAMS)
    res = _results(fid)
    out = {"preset": "embedded", "ht": "constant", "table1_methods": ["ddm", "ddpm", "sde"],
           "ablation_rows": table_rows(params), "datasets": {"digits": {
               "extractor": "digits-classifier", "reference": "reference_stats.npz", "results": res,
               "table1": _markers(res, [m for m in ("ddm", "ddpm", "sde") if m in res])}}}
    if tasks:
        cond = {}
        for task, by_method in tasks.items():
            r = _results(by_method)
            cond[task] = {"metric": METRIC[task], "higher_is_better": HIGHER_IS_BETTER[task], "results": r,
                          "markers": _markers(r, list(r), not HIGHER_IS_BETTER[task]), "references": {}}
        out["conditioned"] = {"methods": ["ddm", "ddpm"], "labels": {"ddm": "DDM", "ddpm": "DDPM"},
                              "table2_nfe": [5, 10], "table3_nfe": [10, 20, 100], "tasks": cond}
    if fig3:
        out["fig3"] = {"digits": {"nfe": 10, "num_samples": 64, "curves": {
            m: {"t": [1.0, 0.5, 0.0], "mse": v} for m, v in fig3.items()}}}
    return out


def _swap(table: dict, a: str, b: str, *keys) -> dict:
    """A copy of ``table`` with methods ``a`` and ``b`` exchanged (at the NFEs ``keys``, or all)."""
    t = copy.deepcopy(table)
    if keys:
        for n in keys:
            t[a][n], t[b][n] = t[b][n], t[a][n]
    else:
        t[a], t[b] = t[b], t[a]
    return t


def _swap_task(tasks: dict, task: str, nfe: int) -> dict:
    """A copy of ``tasks`` with DDM's and DDPM's values of ``task`` at ``nfe`` exchanged."""
    return {**tasks, task: _swap(tasks[task], "ddm", "ddpm", nfe)}


def _without(metrics: dict, *path: str) -> dict:
    m = copy.deepcopy(metrics)
    *parents, last = path
    d = m
    for p in parents:
        d = d[p]
    del d[last]
    return m


#: claim id -> (its metrics with the ordering reversed, its metrics without the table it needs).
CASES = {
    "table1-few-step": (lambda: make_metrics(fid=_swap(FID, "ddm", "ddpm", 20)),
                        lambda: _without(make_metrics(), "datasets", "digits")),
    "table1-close-to-long": (lambda: make_metrics(fid={**FID, "ddm": {**FID["ddm"], 1000: [1.0, 1.1, 0.9]}}),
                             lambda: make_metrics(fid={**FID, "ddm": {n: v for n, v in FID["ddm"].items() if n != 1000}})),
    "table4-constant": (lambda: make_metrics(fid=_swap(FID, "ht_constant", "ht_linear", 50)),
                        lambda: make_metrics(fid={m: v for m, v in FID.items() if not m.startswith("ht_")})),
    "table5-defaults": (lambda: make_metrics(fid={**FID, "arch_conv": {10: [5.0, 5.1, 4.9]}}),
                        lambda: make_metrics(fid={m: v for m, v in FID.items() if m not in ("w_unit", "w_exp", "arch_conv", "loss_l1")})),
    "fig3-x0-mse": (lambda: make_metrics(fig3=_swap(FIG3, "ddpm", "ddpm_x0")),
                    lambda: make_metrics(fig3=None)),
    "table2-beats-ddpm": (lambda: make_metrics(tasks=_swap_task(TASKS, "super_resolution", 5)),
                          lambda: make_metrics(tasks=None)),
    "table3-flat": (lambda: make_metrics(tasks={**TASKS, "inpainting": {**TASKS["inpainting"], "ddpm": {
                        n: [100.0, 100.5, 100.2][:len(v)] for n, v in TASKS["inpainting"]["ddpm"].items()}}}),
                    lambda: make_metrics(tasks=None)),
}


def _verdict(metrics: dict, claim: str) -> dict:
    return next(r for r in verdicts(metrics) if r["id"] == claim)


def test_every_claim_has_cases():
    assert [c.id for c in claims.CLAIMS] == list(CASES)
    assert len({c.id for c in claims.CLAIMS}) == len(claims.CLAIMS) == 7


@pytest.mark.parametrize("claim", CASES)
def test_holds_then_reversed_then_absent(claim):
    """The verdict flips when the fixture reverses the ordering, and is 'not tested' without the table."""
    reversed_, absent = CASES[claim]
    holds = _verdict(make_metrics(), claim)
    assert holds["verdict"] == REPRODUCED, holds["evidence"]
    flipped = _verdict(reversed_(), claim)
    assert flipped["verdict"] == NOT_REPRODUCED, flipped["evidence"]
    missing = _verdict(absent(), claim)
    assert missing["verdict"] == NOT_TESTED, missing["evidence"]


def test_only_the_reversed_claim_flips():
    """Reversing one ordering changes that claim's verdict and no other."""
    base = {r["id"]: r["verdict"] for r in verdicts(make_metrics())}
    assert set(base.values()) == {REPRODUCED}
    for claim, (reversed_, _) in CASES.items():
        got = {r["id"]: r["verdict"] for r in verdicts(reversed_())}
        assert {k for k in got if got[k] != base[k]} == {claim}


def test_table1_needs_significance_and_names_the_test():
    """DDM best but within the noise of DDPM: not reproduced; the evidence gives p and its unit."""
    fid = {**FID, "ddm": {**FID["ddm"], 20: [29.0, 33.0, 26.0]}}
    row = _verdict(make_metrics(fid=fid), "table1-few-step")
    assert row["verdict"] == NOT_REPRODUCED
    assert row["conditions"] == [True, False]
    p = make_metrics(fid=fid)["datasets"]["digits"]["table1"]["20"]["p"]
    assert f"Welch p = {p:.2g} vs DDPM (3 vs 3 sample sets)" in row["evidence"]
    single = make_metrics(fid={m: {n: v[:1] for n, v in by.items()} for m, by in FID.items()})
    assert _verdict(single, "table1-few-step")["verdict"] == NOT_TESTED  # one sample set: no t-test


def test_a_false_condition_wins_over_a_missing_one():
    assert claims.verdict([True, None, False]) == NOT_REPRODUCED
    assert claims.verdict([True, None]) == NOT_TESTED
    assert claims.verdict([]) == NOT_TESTED
    assert claims.verdict([True, True]) == REPRODUCED


def test_table5_tie_is_a_t_test_and_a_significant_loss_is_not():
    row = _verdict(make_metrics(), "table5-defaults")
    assert r"the default ties with $\lambda_1 = 1$, $\lambda_2 = 1$: Welch p = " in row["evidence"]
    fid = {**FID, "w_unit": {10: [9.0, 9.1, 8.9]}}  # clearly below the default
    row = _verdict(make_metrics(fid=fid), "table5-defaults")
    assert row["verdict"] == NOT_REPRODUCED and r"the default loses to $\lambda_1 = 1$, $\lambda_2 = 1$" in row["evidence"]


def test_table4_a_lower_family_refutes_c_only_through_its_t_test():
    """A family below h_t = c within the noise of its rows neither shows nor refutes "c is lowest"
    (borderline, with the test in the evidence); far below it refutes it; one value a row has no
    test, and the lower mean decides."""
    noisy = {**FID, "ht_sin": {10: [6.0, 10.0, 8.0], 50: [20.0, 21.0, 19.0]}}  # 8 +- 2 against c's 10 +- 0.2
    row = _verdict(make_metrics(fid=noisy), "table4-constant")
    assert row["verdict"] == claims.BORDERLINE and row["conditions"] == [claims.BORDERLINE, True]
    assert "sin is lower: Welch p = 0.22 (3 vs 3 sample sets)" in row["evidence"]
    clear = {**FID, "ht_sin": {10: [6.0, 6.1, 5.9], 50: [20.0, 21.0, 19.0]}}
    row = _verdict(make_metrics(fid=clear), "table4-constant")
    assert row["verdict"] == NOT_REPRODUCED and "sin is lower: Welch p = " in row["evidence"]
    single = {m: ({n: v[:1] for n, v in by.items()} if m.startswith("ht_") else by) for m, by in noisy.items()}
    row = _verdict(make_metrics(fid=single), "table4-constant")
    assert row["verdict"] == NOT_REPRODUCED and "sin is lower (no test: fewer than 2 values a cell)" in row["evidence"]


def test_table2_minds_the_metric_direction():
    """PSNR: higher is better. DDM's higher PSNR holds; a lower MAE of DDPM does not."""
    row = _verdict(make_metrics(), "table2-beats-ddpm")
    assert "super-resolution PSNR$\\uparrow$, 5 steps: DDM 27.05" in row["evidence"]
    row = _verdict(make_metrics(tasks=_swap_task(TASKS, "saliency", 5)), "table2-beats-ddpm")
    assert row["verdict"] == NOT_REPRODUCED and row["conditions"][:2] == [False, True]  # saliency at 5, 10


def test_close_states_unequal_counts_and_the_ratio():
    row = _verdict(make_metrics(), "table1-close-to-long")
    assert "ratio 1.67" in row["evidence"] and "unequal sample counts" in row["evidence"]
    assert f"at most {claims.CLOSE_RATIO:g} times" in row["criterion"]


def test_thresholds_are_stated_in_the_criteria():
    text = {r["id"]: r["criterion"] for r in verdicts(make_metrics())}
    lo, hi = claims.P_BAND
    assert f"$p < {lo:g}$" in text["table1-few-step"] and f"{lo:g} \\leq p < {hi:g}" in text["table1-few-step"]
    assert f"{claims.FLAT_REL:.0%}".replace("%", r"\%") in text["table3-flat"]
    assert f"$p < {claims.ALPHA:g}$" in text["table3-flat"] and "equivalence test" in text["table3-flat"]
    assert f"$p \\geq {hi:g}$" in text["table5-defaults"]
    for claim in ("table1-few-step", "table1-close-to-long", "table4-constant", "table5-defaults", "fig3-x0-mse",
                  "table2-beats-ddpm", "table3-flat"):
        assert "borderline" in text[claim].lower(), claim  # every criterion states its margin


# --------------------------------------------------------------------------- margins and Table 3's tests
def test_borderline_wins_over_missing_and_loses_to_false():
    assert claims.verdict([True, claims.BORDERLINE, None]) == claims.BORDERLINE
    assert claims.verdict([claims.BORDERLINE, False]) == NOT_REPRODUCED
    assert claims.verdict([True, claims.BORDERLINE]) == claims.BORDERLINE


def test_a_p_value_inside_the_band_is_borderline():
    """Table 1's marker p: below P_BAND reproduced, inside it borderline, above it not reproduced."""
    near = {**FID, "ddpm": {**FID["ddpm"], 20: [8.5, 8.9, 8.3]}}  # DDM 8.0 +- 0.1 against a noisy second best (p 0.07)
    p = make_metrics(fid=near)["datasets"]["digits"]["table1"]["20"]["p"]
    assert claims.P_BAND[0] <= p < claims.P_BAND[1], p
    assert _verdict(make_metrics(fid=near), "table1-few-step")["verdict"] == claims.BORDERLINE


def test_a_hair_between_two_means_is_borderline():
    """Two means closer than CPU_REL: the ordering is within one CPU's numerics (Tables 2, 4; close ratio)."""
    tasks = {**TASKS, "saliency": {**TASKS["saliency"], "ddpm": {**TASKS["saliency"]["ddpm"], 5: [0.0506, 0.0507]}}}
    assert _verdict(make_metrics(tasks=tasks), "table2-beats-ddpm")["verdict"] == claims.BORDERLINE
    fid = {**FID, "ht_linear": {10: [10.1, 10.3, 9.9], 50: [8.0, 8.1, 7.9]}}
    assert _verdict(make_metrics(fid=fid), "table4-constant")["verdict"] == claims.BORDERLINE
    ratio = claims.CLOSE_RATIO * (1 + claims.CPU_REL)  # just above the threshold, inside its margin
    fid = {**FID, "ddm": {**FID["ddm"], 1000: [v / ratio for v in FID["ddm"][10]]}}
    assert _verdict(make_metrics(fid=fid), "table1-close-to-long")["verdict"] == claims.BORDERLINE


def _ddm_column(tasks: dict, task: str, by_nfe: dict) -> dict:
    return {**tasks, task: {**tasks[task], "ddm": {**tasks[task]["ddm"], **by_nfe}}}


def test_table3_flips_when_the_ddm_column_slopes():
    """A DDM column that falls by 20 % over Table 3's NFEs is not flat: shown apart, not reproduced."""
    sloped = _ddm_column(TASKS, "inpainting", {20: [5.0, 5.05, 4.95], 100: [4.4, 4.45, 4.35]})
    row = _verdict(make_metrics(tasks=sloped), "table3-flat")
    assert row["verdict"] == NOT_REPRODUCED, row["evidence"]
    assert row["conditions"] == [True, True, False]
    assert "NFE 100: equal p = " in row["evidence"] and "apart p = " in row["evidence"]


def test_table3_noise_that_shows_nothing_is_borderline():
    """A DDM column whose sets are too noisy to show equality within FLAT_REL, or a difference beyond it."""
    noisy = _ddm_column(TASKS, "inpainting", {20: [5.0, 6.1, 5.5], 100: [5.1, 6.0, 5.4]})
    row = _verdict(make_metrics(tasks=noisy), "table3-flat")
    assert row["verdict"] == claims.BORDERLINE, row["evidence"]


def test_table3_needs_two_sample_sets_per_column():
    one = {t: {m: {n: v[:1] for n, v in by.items()} for m, by in ms.items()} for t, ms in TASKS.items()}
    row = _verdict(make_metrics(tasks=one), "table3-flat")
    assert row["verdict"] == NOT_TESTED and "table3.repeats" in row["evidence"]


# --------------------------------------------------------------------------- claims.tex
def test_rendered_claims_contain_each_row_and_are_stable():
    metrics = make_metrics(fid=_swap(FID, "ddm", "ddpm", 20), fig3=None)
    tex = render_claims(metrics)
    assert tex == render_claims(json.loads(json.dumps(metrics)))  # byte-stable, as read back from JSON
    rows = re.findall(r"^\\raggedright\\textbf\{(.+?)\.\} .* & \\raggedright (.+?) \\tabularnewline$", tex, flags=re.M)
    assert [(src, claims.VERDICT_TEX[r["verdict"]]) for r, (src, _) in zip(verdicts(metrics), rows)] == rows
    assert [src for src, _ in rows] == [c.source for c in claims.CLAIMS]
    for r in verdicts(metrics):
        assert r["claim"] in tex and r["criterion"] in tex and r["evidence"] in tex
    assert r"\textbf{not reproduced}" in tex and r"\textit{not tested in this run}" in tex
    assert "5 reproduced, 1 not\nreproduced, 0 borderline, 1 not tested" in tex


def test_ddm_report_writes_claims_tex(tmp_path):
    """Through the CLI: `ddm report --claims` from a metrics.json and a Fig. 3 curves file."""
    metrics = make_metrics()
    fig3 = metrics.pop("fig3")["digits"]
    save_json(metrics, tmp_path / "metrics.json")  # products carry their checksum (ddm.io)
    save_json(fig3, tmp_path / "results" / "metrics" / "digits" / "fig3.json")
    r = run_ddm(tmp_path, "report", "--metrics", "metrics.json", "--out", "tables.tex", "--claims", "claims.tex",
                "--fig3", "results/metrics/digits/fig3.json")
    assert r.returncode == 0, r.output
    assert (tmp_path / "claims.tex").read_text() == render_claims({**metrics, "fig3": {"digits": fig3}})
    assert (tmp_path / "tables.tex").is_file()
    r = run_ddm(tmp_path, "report", "--metrics", "metrics.json", "--out", "tables.tex", "--claims", "c2.tex")
    assert r.returncode == 0, r.output
    assert "Fig. 3 was not built" in (tmp_path / "c2.tex").read_text()


def test_the_report_shows_claims_on_its_first_page():
    from ddm.report.pdf import render_report

    metrics = make_metrics()
    tex = render_report(REPO / "reports" / "report.tex.j2", metrics, [], claims=True)
    first_page = tex.split(r"\begin{document}")[1].split(r"\clearpage")[0]
    assert r"\input{claims.tex}" in first_page and first_page.index(r"\maketitle") < first_page.index("claims.tex")
    assert r"\input{claims.tex}" not in render_report(REPO / "reports" / "report.tex.j2", metrics, [])


def test_every_evidence_text_is_latex_safe():
    """No bare underscore outside math in claims.tex, whatever is missing (e.g. Table 4 without
    its h_t = c row, which the every-switch report run meets)."""
    for fid in (FID, {k: v for k, v in FID.items() if k != "ht_constant"}):
        tex = render_claims(make_metrics(fid=fid))
        text = re.sub(r"\$[^$]*\$", "", tex)
        assert not re.search(r"(?<!\\)_", text), [ln for ln in text.splitlines() if re.search(r"(?<!\\)_", ln)][:3]
