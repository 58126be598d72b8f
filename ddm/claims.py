"""A verdict for every claim of the paper, computed from reports/metrics.json (``ddm stats``).

One :class:`Claim` per claim of the paper (Tables 1-5, Fig. 3): its id, where the paper makes it,
its statement, the criterion as text and as code. The thresholds are the named constants below,
stated once and rendered into each row's criterion. :func:`verdicts` is a pure function of the
content of reports/metrics.json: it reads numbers, never writes a verdict by hand and never tunes
anything. Each claim's check yields a list of conditions, each true, false or unknown (a number
the run does not have), with its evidence; the verdict combines them:

* ``"not reproduced"``: some condition is false (a measured number contradicts the claim, even
  if other numbers are absent);
* ``"not tested in this run"``: no condition is false and some number is absent (a table that
  was not built: ``ablations``, ``conditioned`` or ``long_nfe`` off, or NFE columns the preset
  does not sample; or a t-test that could not run);
* ``"reproduced"``: every condition holds.

A claim over several datasets (Table 1 on CIFAR-10 and CelebA-HQ-256) must hold on each dataset
that has its numbers. Method roles are the params.yaml names the report uses (:data:`DDM`, ...).
Fig. 3's curves are not part of ``ddm stats``' output: ``ddm report --fig3`` adds the content of
each results/metrics/<dataset>/fig3.json under the key ``"fig3"`` (dataset -> curves file).

The t-tests are those of ``ddm stats`` (Table 1's markers: Welch, two-sided, best against second
best; Table 2's per-column markers) or :func:`ddm.stats.ttest` (Table 5's ties). They run over
the repeated sample sets of one trained network per method, unless a marker column names
another ``unit`` (training-seed replicates): the evidence says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ddm import resources

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "NOT_TESTED", "ALPHA", "CLOSE_RATIO", "FLAT_REL", "CLAIMS", "Claim",
           "verdict", "verdicts", "render_claims", "render_tables_and_claims", "CLAIMS_TEMPLATE"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTED = "not tested in this run"

#: Significance level of every t-test (Table 1: "p-value < 0.05 based on the two sample t-test").
ALPHA = 0.05
#: "Close" (Table 1): DDM's FID at NFE 10 is at most this many times its FID at NFE 1000: no
#: further than the paper's own Table 1 puts it (13.92 / 2.40 = 5.8 on CIFAR-10, 27.45 / 7.10 = 3.9
#: on CelebA-HQ-256), so a run that reproduces the paper's gap passes and a wider gap fails.
CLOSE_RATIO = 6.0
#: "Flat" (Table 3): over Table 3's NFEs, DDM's metric spans at most this fraction of its value at
#: the fewest steps; "improves": DDPM's metric at the most steps is better than at the fewest by
#: more than this fraction.
FLAT_REL = 0.05
#: The NFEs of the claims: Table 1's few-step columns, its close-to-long pair, Table 2's steps,
#: Table 5's column (10-step FID).
TABLE1_NFES = (10, 20)
SHORT_NFE, LONG_NFE = 10, 1000
TABLE2_NFES = (5, 10)
TABLE5_NFE = 10
#: The methods' params.yaml names (Table 1, Fig. 3, Tables 2-3) and their names in the evidence.
DDM, DDPM, SDE, DDPM_X0 = "ddm", "ddpm", "sde", "ddpm_x0"
NAMES = {DDM: "DDM", DDPM: "DDPM", SDE: "SDE", DDPM_X0: "DDPM + $x_0$ branch"}
#: The h_t family Table 4 claims best (its row is found by the family's label, ddm.snapshot).
BEST_FAMILY = "constant"
#: The conditioned tasks of Tables 2 and 3, in the paper's column order.
TASKS = ("saliency", "super_resolution", "inpainting")
#: The template of reports/claims.tex (ddm/templates), by file name.
CLAIMS_TEMPLATE = resources.CLAIMS_TEMPLATE.name
#: The unit of a t-test when its column names none: repeated sample sets of one trained network
#: per method (the criteria say so; a column of training-seed replicates names its own ``unit``).
SAMPLE_SETS = "sample sets"

Check = tuple  # (True | False | None, evidence text)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``check(metrics)`` -> conditions, each ``(ok, evidence)``."""

    id: str
    source: str
    statement: str
    criterion: str
    check: Callable[[Mapping], list]


def verdict(oks: Iterable[bool | None]) -> str:
    """Any false -> not reproduced; else any unknown (or none at all) -> not tested; else reproduced."""
    oks = list(oks)
    if any(ok is False for ok in oks):
        return NOT_REPRODUCED
    return NOT_TESTED if not oks or any(ok is None for ok in oks) else REPRODUCED


# -- formatting -------------------------------------------------------------------------------
def _esc(text: str) -> str:
    from ddm.report.labels import latex_escape

    return latex_escape(text)


def _num(x: float) -> str:
    return f"{x:.4g}"


def _p(p: float | None) -> str:
    return "undefined" if p is None or math.isnan(p) else f"{p:.2g}"


def _value(r: Mapping) -> str:
    """A result (mean, std, n) as 'mean $\\pm$ std' (the mean alone for one repeat)."""
    return _num(r["mean"]) + (rf" $\pm$ {r['std']:.2g}" if r.get("std") is not None else "")


def _name(method: str) -> str:
    return NAMES.get(method) or _esc(method)


def _unit(column: Mapping, n_a: int, n_b: int) -> str:
    return f"{n_a} vs {n_b} {_esc(column.get('unit') or SAMPLE_SETS)}"


def _datasets(metrics: Mapping) -> list[tuple[str, Mapping]]:
    return sorted(metrics.get("datasets", {}).items())


def _absent(what: str) -> list[Check]:
    return [(None, what)]


# -- Table 1 ----------------------------------------------------------------------------------
def _table1_column(ds: str, d: Mapping, nfe: int) -> Check:
    """DDM is Table 1's best at ``nfe`` with the significance marker (best vs second best)."""
    res, key = d["results"], str(nfe)
    missing = [m for m in (DDM, DDPM, SDE) if key not in res.get(m, {})]
    if missing:
        return None, f"{_esc(ds)}, NFE {nfe}: no FID of {', '.join(_name(m) for m in missing)}"
    col = d.get("table1", {}).get(key, {})
    text = f"{_esc(ds)}, NFE {nfe}: " + ", ".join(f"{_name(m)} {_value(res[m][key])}" for m in (DDM, DDPM, SDE))
    if col.get("best") != DDM:
        return False, text + f"; best: {_name(col.get('best', '?'))}"
    second = col.get("second")
    if col.get("marker") not in ("significant", "not_significant"):
        return None, text + f"; no t-test ({_esc(col.get('reason') or 'untested')})"
    unit = _unit(col, res[DDM][key]["n"], res[second][key]["n"])
    test = (col.get("test") or "welch").capitalize()
    text += f"; {test} p = {_p(col.get('p'))} vs {_name(second)} ({unit})"
    return col["marker"] == "significant", text


def _check_table1(metrics: Mapping) -> list[Check]:
    """Table 1: DDM at NFE 10 and 20 beats DDPM and the SDE with p < ALPHA."""
    out = [_table1_column(ds, d, n) for ds, d in _datasets(metrics) for n in TABLE1_NFES]
    return out or _absent("Table 1 was not built")


def _check_close(metrics: Mapping) -> list[Check]:
    """Table 1: DDM's FID at NFE 10 within CLOSE_RATIO of its FID at NFE 1000."""
    out = []
    for ds, d in _datasets(metrics):
        by_nfe = d["results"].get(DDM, {})
        short, long = by_nfe.get(str(SHORT_NFE)), by_nfe.get(str(LONG_NFE))
        if short is None or long is None:
            out.append((None, f"{_esc(ds)}: no DDM FID at NFE {LONG_NFE if short else SHORT_NFE}"))
            continue
        ratio = short["mean"] / long["mean"]
        text = (f"{_esc(ds)}: DDM {_value(short)} at NFE {SHORT_NFE} ({short['num_samples']} samples), "
                f"{_value(long)} at NFE {LONG_NFE} ({long['num_samples']} samples): ratio {ratio:.2f}")
        if short["num_samples"] != long["num_samples"]:
            text += "; unequal sample counts (FID is biased upward at the smaller count)"
            if short.get("kid") and long.get("kid"):  # unbiased at any count (ddm.kid): the comparable pair
                text += f"; KID {_num(short['kid']['mean'])} and {_num(long['kid']['mean'])}"
        out.append((ratio <= CLOSE_RATIO, text))
    return out or _absent("Table 1 was not built")


# -- Tables 4 and 5 ---------------------------------------------------------------------------
def _family_names() -> dict[str, str]:
    """Table 4's row label -> its h_t family (the registries' snapshot, ddm.snapshot)."""
    from ddm import snapshot

    return {label: family for family, label in snapshot.load()["labels"]["family"].items()}


def _check_table4(metrics: Mapping) -> list[Check]:
    """Table 4: the h_t = c row has the lowest mean FID at every NFE of the table."""
    families = _family_names()
    rows = metrics.get("ablation_rows", {}).get("table4", [])
    out = []
    for ds, d in _datasets(metrics):
        res = d["results"]
        measured = [r for r in rows if r["method"] in res]
        if not measured:
            continue
        best = next((r["method"] for r in measured if families.get(r["label"]) == BEST_FAMILY), None)
        nfes = sorted({int(n) for r in measured for n in res[r["method"]]})
        for nfe in nfes:
            means = {r["method"]: res[r["method"]][str(nfe)]["mean"] for r in measured if str(nfe) in res[r["method"]]}
            text = f"{_esc(ds)}, NFE {nfe}: " + ", ".join(
                f"{_esc(families.get(r['label'], r['method']))} {_num(means[r['method']])}"
                for r in measured if r["method"] in means)
            if best not in means:
                out.append((None, text + f"; no FID of $\\mathbf{{h}}_t$ = {_esc(BEST_FAMILY)}"))
            else:
                out.append((means[best] <= min(means.values()), text))
    return out or _absent("Table 4 was not built (ablations off)")


def _group_check(group: str, rows: list[Mapping], res: Mapping, main: str) -> Check:
    """One Table 5 group: the main model's 10-step FID is the lowest, or not significantly above it."""
    from ddm.stats import ttest

    key = str(TABLE5_NFE)
    got = {r["method"]: res[r["method"]][key] for r in rows if key in res.get(r["method"], {})}
    label = {r["method"]: r["label"] for r in rows}  # Table 5's row labels (LaTeX, ddm.roles)
    text = f"{_esc(group)}: " + ", ".join(
        f"{label[m]}{' (default)' if m == main else ''} {_value(got[m])}" for m in label if m in got)
    if main not in got or len(got) < 2:
        return None, f"{_esc(group)}: the default or every other setting lacks a {TABLE5_NFE}-step FID"
    best = min(got, key=lambda m: got[m]["mean"])
    if got[main]["mean"] <= got[best]["mean"]:
        return True, text + "; the default wins"
    a, b = got[main]["values"], got[best]["values"]
    if len(a) < 2 or len(b) < 2:
        return None, text + f"; {label[best]} is lower, and a tie cannot be tested (fewer than 2 repeats)"
    p = ttest(a, b)["p"]
    verdict_text = "ties with" if p >= ALPHA else "loses to"
    return p >= ALPHA, text + f"; the default {verdict_text} {label[best]}: Welch p = {_p(p)} ({len(a)} vs {len(b)} {SAMPLE_SETS})"


def _check_table5(metrics: Mapping) -> list[Check]:
    """Table 5: per group (weighting, head, loss), the main DDM model wins or ties."""
    rows = metrics.get("ablation_rows", {}).get("table5", [])
    main = next((r["method"] for r in rows if r["method"] in metrics.get("table1_methods", [])), None)
    out = []
    for ds, d in _datasets(metrics):
        if not any(r["method"] in d["results"] and r["method"] != main for r in rows):
            continue
        groups: dict[str, list] = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
        out += [_group_check(f"{ds}, {g}", rs, d["results"], main) for g, rs in groups.items()]
    return out or _absent("Table 5 was not built (ablations off)")


# -- Fig. 3 -----------------------------------------------------------------------------------
def _check_fig3(metrics: Mapping) -> list[Check]:
    """Fig. 3: mean x0 MSE over the reverse steps, DDPM > DDPM + x0 branch > DDM."""
    out = []
    for ds, f in sorted(metrics.get("fig3", {}).items()):
        curves = f["curves"]
        order = (DDPM, DDPM_X0, DDM)
        missing = [m for m in order if m not in curves]
        if missing:
            out.append((None, f"{_esc(ds)}: no curve of {', '.join(_name(m) for m in missing)}"))
            continue
        mse = {m: sum(curves[m]["mse"]) / len(curves[m]["mse"]) for m in order}
        text = (f"{_esc(ds)} (NFE {f['nfe']}, {f['num_samples']} samples): mean $x_0$ MSE "
                + ", ".join(f"{_name(m)} {_num(mse[m])}" for m in order))
        out.append((mse[DDPM] > mse[DDPM_X0] > mse[DDM], text))
    return out or _absent("Fig. 3 was not built (ablations off)")


# -- Tables 2 and 3 ---------------------------------------------------------------------------
def _better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def _metric(t: Mapping) -> str:
    return t["metric"].upper() + (r"$\uparrow$" if t["higher_is_better"] else r"$\downarrow$")


def _task_name(task: str) -> str:
    return task.replace("_", "-")


def _check_table2(metrics: Mapping) -> list[Check]:
    """Table 2: DDM's mean beats DDPM's on every task at 5 and 10 steps (the metric's direction)."""
    if not metrics.get("conditioned"):
        return _absent("Table 2 was not built (conditioned off)")
    tasks = metrics["conditioned"].get("tasks", {})
    out = []
    for task in TASKS:
        t = tasks.get(task)
        if t is None:
            out.append((None, f"{_task_name(task)}: not built"))
            continue
        for nfe in TABLE2_NFES:
            ddm, ddpm = (t["results"].get(m, {}).get(str(nfe)) for m in (DDM, DDPM))
            if ddm is None or ddpm is None:
                out.append((None, f"{_task_name(task)}, {nfe} steps: not measured"))
                continue
            text = f"{_task_name(task)} {_metric(t)}, {nfe} steps: DDM {_value(ddm)}, DDPM {_value(ddpm)}"
            col = t.get("markers", {}).get(str(nfe), {})
            if {col.get("best"), col.get("second")} == {DDM, DDPM} and col.get("p") is not None:
                test = (col.get("test") or "welch").capitalize()
                text += f" ({test} p = {_p(col['p'])}, {_unit(col, ddm['n'], ddpm['n'])})"
            out.append((_better(ddm["mean"], ddpm["mean"], t["higher_is_better"]), text))
    return out


def _task_trend(t: Mapping, nfes: list[int]) -> Check:
    """One task of Table 3: DDM flat (spread <= FLAT_REL), DDPM improving (by > FLAT_REL)."""
    series = {m: [t["results"].get(m, {}).get(str(n)) for n in nfes] for m in (DDM, DDPM)}
    if any(r is None for s in series.values() for r in s):
        return None, "not measured at every NFE"
    ddm, ddpm = ([r["mean"] for r in series[m]] for m in (DDM, DDPM))
    if ddm[0] == 0 or ddpm[0] == 0:
        return None, "a value of 0 at the fewest steps (no relative change)"
    spread = (max(ddm) - min(ddm)) / abs(ddm[0])
    sign = 1.0 if t["higher_is_better"] else -1.0
    gain = sign * (ddpm[-1] - ddpm[0]) / abs(ddpm[0])
    text = (f"DDM {_num(ddm[0])} to {_num(ddm[-1])} (spread {spread:.1%}), "
            f"DDPM {_num(ddpm[0])} to {_num(ddpm[-1])} (improves {gain:.1%})").replace("%", r"\%")
    return spread <= FLAT_REL and gain > FLAT_REL, text


def _check_table3(metrics: Mapping) -> list[Check]:
    """Table 3: over its NFEs, DDM stays flat while DDPM improves, on every task."""
    if not metrics.get("conditioned"):
        return _absent("Table 3 was not built (conditioned off)")
    cond = metrics["conditioned"]
    nfes = sorted(cond.get("table3_nfe", []))
    out = []
    for task in TASKS:
        t = cond.get("tasks", {}).get(task)
        if t is None or len(nfes) < 2:
            out.append((None, f"{_task_name(task)}: not built" if t is None else "Table 3 has fewer than 2 NFEs"))
            continue
        ok, text = _task_trend(t, nfes)
        out.append((ok, f"{_task_name(task)} {_metric(t)}, NFE {nfes[0]} to {nfes[-1]}: {text}"))
    return out


# -- the claims -------------------------------------------------------------------------------
CLAIMS: tuple[Claim, ...] = (
    Claim("table1-few-step", "Table 1",
          "At NFE 10 and 20, DDM has a lower FID than DDPM and the SDE, with statistical significance "
          "(CIFAR-10: 13.92 and 8.92 against DDPM's 296.84 and 140.68 and the SDE's 425.67 and 250.29).",
          f"At NFE {' and '.join(map(str, TABLE1_NFES))}, on every dataset: DDM has the lowest mean FID of "
          f"Table 1's trained methods, and Table 1's two-sided t-test against the second best gives "
          f"$p < {ALPHA:g}$ (over training seeds where the run has them, else over sample sets; each row names "
          f"its unit).",
          _check_table1),
    Claim("table1-close-to-long", "Table 1",
          "DDM at NFE 10 comes close to its own NFE 1000 (CIFAR-10: 13.92 against 2.40, ratio 5.8; "
          "CelebA-HQ-256: 27.45 against 7.10, ratio 3.9).",
          f"``Close'': DDM's mean FID at NFE {SHORT_NFE} is at most {CLOSE_RATIO:g} times its mean FID at "
          f"NFE {LONG_NFE}, on every dataset.",
          _check_close),
    Claim("table4-constant", "Table 4",
          r"$\mathbf{h}_t = \mathbf{c}$ is the best family: the lowest FID of the five $\mathbf{h}_t$ "
          "at every NFE (CIFAR-10: 13.92, 5.09, 2.40 at NFE 10, 50, 1000).",
          f"At every NFE of Table 4, the row $\\mathbf{{h}}_t = \\mathbf{{c}}$ ({BEST_FAMILY}) has the lowest "
          "mean FID of the measured families (ties count as lowest).",
          _check_table4),
    Claim("table5-defaults", "Table 5",
          r"The defaults win or tie: weighting $\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$ (13.92 against 14.24 "
          r"and 13.95), the U-Net+decoder head (13.92 against 15.13) and the $\ell_2$ loss (13.92 against 14.98).",
          f"In each group of Table 5, the main DDM model's {TABLE5_NFE}-step mean FID is the lowest, or a "
          f"two-sided Welch t-test against the group's lowest (over training seeds, or sample sets) gives "
          f"$p \\geq {ALPHA:g}$ (a tie).",
          _check_table5),
    Claim("fig3-x0-mse", "Fig. 3",
          r"In $x_0$ MSE along the reverse process, DDPM is worse than DDPM + $x_0$ branch, which is worse than DDM.",
          r"The mean over the reverse steps of the MSE between the predicted $x_0$ and the final sample "
          r"orders DDPM $>$ DDPM + $x_0$ branch $>$ DDM, on every dataset.",
          _check_fig3),
    Claim("table2-beats-ddpm", "Table 2",
          "DDM beats DDPM on every task at 5 and 10 steps (saliency MAE 0.026 and 0.025 against 0.497 and "
          "0.473; super-resolution PSNR 27.61 and 28.30 against 9.13 and 12.46; inpainting FID 5.53 and 5.25 "
          "against 114 and 95.8).",
          f"On each of the three tasks, at {' and '.join(map(str, TABLE2_NFES))} steps: DDM's mean is better "
          r"than DDPM's (MAE and FID lower, PSNR higher).",
          _check_table2),
    Claim("table3-flat", "Table 3",
          "DDM stays flat in NFE while DDPM improves (NFE 10 to 100, saliency MAE: DDM 0.0253 to 0.0250, "
          "DDPM 0.4731 to 0.1985).",
          f"On each task, over Table 3's NFEs: ``flat'': DDM's means span at most {FLAT_REL:.0%} of its value at "
          f"the fewest steps; ``improves'': DDPM's mean at the most steps is better than at the fewest by more "
          f"than {FLAT_REL:.0%}.".replace("%", r"\%"),
          _check_table3),
)


def verdicts(metrics: Mapping) -> list[dict]:
    """One row per claim of :data:`CLAIMS`: ``{"id", "source", "claim", "criterion", "evidence",
    "conditions", "verdict"}`` from the content of reports/metrics.json (LaTeX text; ``evidence``:
    the conditions' texts joined by "; "). Pure: the same metrics give the same rows."""
    rows = []
    for c in CLAIMS:
        checks = c.check(metrics)
        rows.append({"id": c.id, "source": c.source, "claim": c.statement, "criterion": c.criterion,
                     "evidence": "; ".join(text for _, text in checks) + ".",
                     "conditions": [ok for ok, _ in checks], "verdict": verdict(ok for ok, _ in checks)})
    return rows


#: How each verdict is set in reports/claims.tex.
VERDICT_TEX = {REPRODUCED: r"\textbf{reproduced}", NOT_REPRODUCED: r"\textbf{not reproduced}",
               NOT_TESTED: r"\textit{not tested in this run}"}


def render_claims(metrics: Mapping) -> str:
    """reports/claims.tex: the rows of :func:`verdicts` as one LaTeX table (ddm/templates/claims.tex.j2,
    the environment of reports/tables.tex: LaTeX-safe delimiters, StrictUndefined; byte-stable)."""
    from ddm.report.tables import template_env

    rows = [{**r, "verdict_tex": VERDICT_TEX[r["verdict"]]} for r in verdicts(metrics)]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (REPRODUCED, NOT_REPRODUCED, NOT_TESTED)}
    return template_env().get_template(CLAIMS_TEMPLATE).render(rows=rows, counts=counts, preset=_esc(metrics["preset"]))


def render_tables_and_claims(metrics: Mapping, published_csv=resources.PUBLISHED_CSV,
                             fig3: Mapping | None = None) -> tuple[str, str | None]:
    """The LaTeX of ``ddm report``: reports/tables.tex (``ddm.report.tables.render_tables``, the
    published results of ``published_csv`` beside the measured ones) and, when ``fig3`` is given
    (dataset -> the content of its fig3.json; empty: no curves), reports/claims.tex
    (:func:`render_claims` of the metrics with ``fig3`` under the key ``"fig3"``); else None."""
    from ddm.report.tables import render_tables

    tables = render_tables(metrics, published_csv)
    return tables, None if fig3 is None else render_claims({**metrics, "fig3": fig3})
