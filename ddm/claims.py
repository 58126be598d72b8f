"""A verdict for every claim of the paper, computed from reports/metrics.json (``ddm stats``).

One :class:`Claim` per claim of the paper (Tables 1-5, Fig. 3): its id, where the paper makes it,
its statement, the criterion as text and as code. The thresholds are the named constants below,
stated once and rendered into each row's criterion. :func:`verdicts` is a pure function of the
content of reports/metrics.json: it reads numbers, never writes a verdict by hand and never tunes
anything. Each claim's check yields a list of conditions, each true, false or unknown (a number
the run does not have), with its evidence; the verdict combines them:

* ``"not reproduced"``: some condition is false (a measured number contradicts the claim, even
  if other numbers are absent);
* ``"borderline"``: no condition is false and some condition is within its stated margin of its
  threshold (:data:`CPU_REL`, :data:`P_BAND`), where the same seeded run on another CPU could land
  on either side: a knife edge is reported as one, not as a verdict;
* ``"not tested in this run"``: no condition is false or borderline and some number is absent (a
  table that was not built: ``ablations``, ``conditioned`` or ``long_nfe`` off, or NFE columns the
  preset does not sample; or a t-test that could not run);
* ``"reproduced"``: every condition holds.

A claim over several datasets (Table 1 on CIFAR-10 and CelebA-HQ-256) must hold on each dataset
that has its numbers. Method roles are the params.yaml names the report uses (:data:`DDM`, ...).
Fig. 3's curves are not part of ``ddm stats``' output: ``ddm report --fig3`` adds the content of
each results/metrics/<dataset>/fig3.json under the key ``"fig3"`` (dataset -> curves file).

The t-tests are those of ``ddm stats`` (Table 1's markers: Welch, two-sided, best against second
best; Table 2's per-column markers) or :func:`ddm.stats.ttest` (Table 4's and Table 5's rows).
They run over the repeated sample sets of one trained network per method, unless a cell names
another ``unit`` (training-seed replicates): the evidence says which. The thresholds, margins and
conditions are ddm.criteria's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from ddm import resources
from ddm.claims_ablations import check_fig3, check_table4, check_table5
from ddm.criteria import (ALPHA, BEST_FAMILY, BORDERLINE, CLOSE_RATIO, CPU_REL, DDM, DDPM, FLAT_REL,
                          LONG_NFE, NOT_REPRODUCED, NOT_TESTED, P_BAND, REPRODUCED, SDE, SHORT_NFE,
                          TABLE1_NFES, TABLE2_NFES, TABLE5_NFE, TASKS, VERDICTS, Check, absent, ahead, all_hold,
                          at_most, by_p, datasets_of, esc, fmt_num, fmt_p, fmt_unit, fmt_value, method_name, verdict)

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "NOT_TESTED", "BORDERLINE", "VERDICTS", "ALPHA", "CLOSE_RATIO", "FLAT_REL",
           "CPU_REL", "P_BAND", "CLAIMS", "Claim",
           "verdict", "verdicts", "render_claims", "render_tables_and_claims", "CLAIMS_TEMPLATE"]

CLAIMS_TEMPLATE = resources.CLAIMS_TEMPLATE.name
@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``check(metrics)`` -> conditions, each ``(ok, evidence)``."""

    id: str
    source: str
    statement: str
    criterion: str
    check: Callable[[Mapping], list]


# -- Table 1 ----------------------------------------------------------------------------------
def _table1_column(ds: str, d: Mapping, nfe: int) -> Check:
    """DDM is Table 1's best at ``nfe`` with the significance marker (best vs second best)."""
    res, key = d["results"], str(nfe)
    missing = [m for m in (DDM, DDPM, SDE) if key not in res.get(m, {})]
    if missing:
        return None, f"{esc(ds)}, NFE {nfe}: no FID of {', '.join(method_name(m) for m in missing)}"
    col = d.get("table1", {}).get(key, {})
    text = f"{esc(ds)}, NFE {nfe}: " + ", ".join(f"{method_name(m)} {fmt_value(res[m][key])}" for m in (DDM, DDPM, SDE))
    if col.get("best") != DDM:
        best = col.get("best", "?")
        ok = ahead(res[DDM][key]["mean"], res[best][key]["mean"]) if best in res else False
        return (False if ok is True else ok), text + f"; best: {method_name(best)}"
    second = col.get("second")
    if col.get("marker") not in ("significant", "not_significant"):
        return None, text + f"; no t-test ({esc(col.get('reason') or 'untested')})"
    unit = fmt_unit(col, res[DDM][key]["n"], res[second][key]["n"])
    test = (col.get("test") or "welch").capitalize()
    text += f"; {test} p = {fmt_p(col.get('p'))} vs {method_name(second)} ({unit})"
    return by_p(col["p"]), text


def _check_table1(metrics: Mapping) -> list[Check]:
    """Table 1: DDM at NFE 10 and 20 beats DDPM and the SDE with p < ALPHA."""
    out = [_table1_column(ds, d, n) for ds, d in datasets_of(metrics) for n in TABLE1_NFES]
    return out or absent("Table 1 was not built")


def _check_close(metrics: Mapping) -> list[Check]:
    """Table 1: DDM's FID at NFE 10 within CLOSE_RATIO of its FID at NFE 1000."""
    out = []
    for ds, d in datasets_of(metrics):
        by_nfe = d["results"].get(DDM, {})
        short, long = by_nfe.get(str(SHORT_NFE)), by_nfe.get(str(LONG_NFE))
        if short is None or long is None:
            out.append((None, f"{esc(ds)}: no DDM FID at NFE {LONG_NFE if short else SHORT_NFE}"))
            continue
        ratio = short["mean"] / long["mean"]
        text = (f"{esc(ds)}: DDM {fmt_value(short)} at NFE {SHORT_NFE} ({short['num_samples']} samples), "
                f"{fmt_value(long)} at NFE {LONG_NFE} ({long['num_samples']} samples): ratio {ratio:.2f}")
        if short["num_samples"] != long["num_samples"]:
            text += "; unequal sample counts (FID is biased upward at the smaller count)"
            if short.get("kid") and long.get("kid"):  # unbiased at any count (ddm.kid): the comparable pair
                text += f"; KID {fmt_num(short['kid']['mean'])} and {fmt_num(long['kid']['mean'])}"
        out.append((at_most(ratio, CLOSE_RATIO), text))
    return out or absent("Table 1 was not built")


# -- Tables 2 and 3 ---------------------------------------------------------------------------
def _metric(t: Mapping) -> str:
    return t["metric"].upper() + (r"$\uparrow$" if t["higher_is_better"] else r"$\downarrow$")


def _task_name(task: str) -> str:
    return task.replace("_", "-")


def _check_table2(metrics: Mapping) -> list[Check]:
    """Table 2: DDM's mean beats DDPM's on every task at 5 and 10 steps (the metric's direction)."""
    if not metrics.get("conditioned"):
        return absent("Table 2 was not built (conditioned off)")
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
            text = f"{_task_name(task)} {_metric(t)}, {nfe} steps: DDM {fmt_value(ddm)}, DDPM {fmt_value(ddpm)}"
            col = t.get("markers", {}).get(str(nfe), {})
            if {col.get("best"), col.get("second")} == {DDM, DDPM} and col.get("p") is not None:
                test = (col.get("test") or "welch").capitalize()
                text += f" ({test} p = {fmt_p(col['p'])}, {fmt_unit(col, ddm['n'], ddpm['n'])})"
            out.append((ahead(ddm["mean"], ddpm["mean"], not t["higher_is_better"]), text))
    return out


def _flat(values: list[list[float]], nfes: list[int]) -> tuple[bool | str, str]:
    """DDM's "flat": at each NFE past the fewest, its mean equals the fewest steps' within FLAT_REL
    of that mean (:func:`ddm.stats.within`, TOST). True: shown at every NFE (p < ALPHA); False:
    some NFE differs by more than the margin (:func:`ddm.stats.beyond` either way, p < ALPHA);
    borderline: neither shown."""
    from ddm.stats import beyond, within

    base, margin = values[0], FLAT_REL * abs(sum(values[0]) / len(values[0]))
    oks, notes = [], []
    for n, v in zip(nfes[1:], values[1:]):
        p_eq = within(v, base, margin)
        p_out = min(beyond(v, base, margin), beyond(base, v, margin))
        oks.append(True if p_eq < ALPHA else False if p_out < ALPHA else BORDERLINE)
        notes.append(f"NFE {n}: equal p = {fmt_p(p_eq)}" + (f", apart p = {fmt_p(p_out)}" if oks[-1] is not True else ""))
    return all_hold(oks), "; ".join(notes)


def _improves(first: list[float], last: list[float], higher_is_better: bool) -> tuple[bool | str, str]:
    """DDPM's "improves": its mean at the most steps is better than at the fewest by more than
    FLAT_REL of the fewest steps' mean (:func:`ddm.stats.beyond`, p < ALPHA). False: shown to
    improve by less (p < ALPHA the other way); borderline: neither shown."""
    from ddm.stats import beyond

    margin = FLAT_REL * abs(sum(first) / len(first))
    a, b = (last, first) if higher_is_better else (first, last)  # mean(a) - mean(b): the gain
    p_gain, p_less = beyond(a, b, margin), beyond([x + margin for x in b], a, 0.0)
    ok = True if p_gain < ALPHA else False if p_less < ALPHA else BORDERLINE
    return ok, f"gain beyond the margin p = {fmt_p(p_gain)}" + (f", within it p = {fmt_p(p_less)}" if ok is not True else "")


def _task_trend(t: Mapping, nfes: list[int]) -> Check:
    """One task of Table 3: DDM flat (:func:`_flat`), DDPM improving (:func:`_improves`)."""
    series = {m: [t["results"].get(m, {}).get(str(n)) for n in nfes] for m in (DDM, DDPM)}
    if any(r is None for s in series.values() for r in s):
        return None, "not measured at every NFE"
    ddm, ddpm = ([r["mean"] for r in series[m]] for m in (DDM, DDPM))
    if ddm[0] == 0 or ddpm[0] == 0:
        return None, "a value of 0 at the fewest steps (no relative change)"
    spread = (max(ddm) - min(ddm)) / abs(ddm[0])
    sign = 1.0 if t["higher_is_better"] else -1.0
    gain = sign * (ddpm[-1] - ddpm[0]) / abs(ddpm[0])
    sets = sorted({len(r["values"]) for s in series.values() for r in s})
    text = (f"DDM {fmt_num(ddm[0])} to {fmt_num(ddm[-1])} (spread {spread:.1%}), "
            f"DDPM {fmt_num(ddpm[0])} to {fmt_num(ddpm[-1])} (improves {gain:.1%}); "
            f"{'/'.join(map(str, sets))} sample sets per column").replace("%", r"\%")
    if sets[0] < 2:
        return None, text + "; a test needs at least 2 sample sets per column (params.yaml: table3.repeats)"
    flat, flat_text = _flat([r["values"] for r in series[DDM]], nfes)
    improves, gain_text = _improves(series[DDPM][0]["values"], series[DDPM][-1]["values"], t["higher_is_better"])
    return all_hold([flat, improves]), text + f"; DDM flat: {flat_text}; DDPM: {gain_text}"


def _check_table3(metrics: Mapping) -> list[Check]:
    """Table 3: over its NFEs, DDM stays flat while DDPM improves, on every task."""
    if not metrics.get("conditioned"):
        return absent("Table 3 was not built (conditioned off)")
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
          f"$p < {P_BAND[0]:g}$ (over training seeds where the run has them, else over sample sets; each row names "
          f"its unit). Borderline: ${P_BAND[0]:g} \\leq p < {P_BAND[1]:g}$, or DDM within {CPU_REL:.0%} of the best "
          f"mean.".replace("%", r"\%"),
          _check_table1),
    Claim("table1-close-to-long", "Table 1",
          "DDM at NFE 10 comes close to its own NFE 1000 (CIFAR-10: 13.92 against 2.40, ratio 5.8; "
          "CelebA-HQ-256: 27.45 against 7.10, ratio 3.9).",
          f"``Close'': DDM's mean FID at NFE {SHORT_NFE} is at most {CLOSE_RATIO:g} times its mean FID at "
          f"NFE {LONG_NFE}, on every dataset (borderline: within {2 * CPU_REL:.0%} of {CLOSE_RATIO:g}).".replace("%", r"\%"),
          _check_close),
    Claim("table4-constant", "Table 4",
          r"$\mathbf{h}_t = \mathbf{c}$ is the best family: the lowest FID of the five $\mathbf{h}_t$ "
          "at every NFE (CIFAR-10: 13.92, 5.09, 2.40 at NFE 10, 50, 1000).",
          f"At every NFE, $\\mathbf{{h}}_t = \\mathbf{{c}}$ ({BEST_FAMILY}) has the lowest mean FID; a lower "
          f"family refutes it if a Welch test gives $p < {P_BAND[0]:g}$, else borderline (so is c within "
          f"{CPU_REL:.0%}; one value a row: the lower mean refutes).".replace("%", r"\%"),
          check_table4),
    Claim("table5-defaults", "Table 5",
          r"The defaults win or tie: weighting $\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$ (13.92 against 14.24 "
          r"and 13.95), the U-Net+decoder head (13.92 against 15.13) and the $\ell_2$ loss (13.92 against 14.98).",
          f"In each group of Table 5, the main DDM model's {TABLE5_NFE}-step mean FID is the lowest, or a "
          f"two-sided Welch t-test against the group's lowest (over training seeds, or sample sets) gives "
          f"$p \\geq {P_BAND[1]:g}$ (a tie; borderline: ${P_BAND[0]:g} \\leq p < {P_BAND[1]:g}$).",
          check_table5),
    Claim("fig3-x0-mse", "Fig. 3",
          r"In $x_0$ MSE along the reverse process, DDPM is worse than DDPM + $x_0$ branch, which is worse than DDM.",
          r"The mean over the reverse steps of the MSE between the predicted $x_0$ and the final sample "
          r"orders DDPM $>$ DDPM + $x_0$ branch $>$ DDM, on every dataset (borderline: two of them within "
          f"{CPU_REL:.0%} of each other).".replace("%", r"\%"),
          check_fig3),
    Claim("table2-beats-ddpm", "Table 2",
          "DDM beats DDPM on every task at 5 and 10 steps (saliency MAE 0.026 and 0.025 against 0.497 and "
          "0.473; super-resolution PSNR 27.61 and 28.30 against 9.13 and 12.46; inpainting FID 5.53 and 5.25 "
          "against 114 and 95.8).",
          f"On each of the three tasks, at {' and '.join(map(str, TABLE2_NFES))} steps: DDM's mean is better "
          r"than DDPM's (MAE and FID lower, PSNR higher; borderline: within "
          f"{CPU_REL:.0%} of each other).".replace("%", r"\%"),
          _check_table2),
    Claim("table3-flat", "Table 3",
          "DDM stays flat in NFE while DDPM improves (NFE 10 to 100, saliency MAE: DDM 0.0253 to 0.0250, "
          "DDPM 0.4731 to 0.1985).",
          f"On each task, over Table 3's NFEs, each column's sample sets: ``flat'': at every NFE, DDM's mean "
          f"equals its mean at the fewest steps within {FLAT_REL:.0%} of it, shown by an equivalence test (two "
          f"one-sided Welch tests, $p < {ALPHA:g}$); ``improves'': DDPM's mean at the most steps is better than "
          f"at the fewest by more than {FLAT_REL:.0%}, shown by a one-sided Welch test ($p < {ALPHA:g}$). Neither "
          f"shown nor refuted: borderline.".replace("%", r"\%"),
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
               BORDERLINE: r"\textit{borderline}", NOT_TESTED: r"\textit{not tested in this run}"}


def render_claims(metrics: Mapping) -> str:
    """reports/claims.tex: the rows of :func:`verdicts` as one LaTeX table (ddm/templates/claims.tex.j2,
    the environment of reports/tables.tex: LaTeX-safe delimiters, StrictUndefined; byte-stable)."""
    from ddm.report.tables import template_env

    rows = [{**r, "verdict_tex": VERDICT_TEX[r["verdict"]]} for r in verdicts(metrics)]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return template_env().get_template(CLAIMS_TEMPLATE).render(rows=rows, counts=counts, preset=esc(metrics["preset"]))


def render_tables_and_claims(metrics: Mapping, published_csv=resources.PUBLISHED_CSV,
                             fig3: Mapping | None = None) -> tuple[str, str | None]:
    """The LaTeX of ``ddm report``: reports/tables.tex (``ddm.report.tables.render_tables``, the
    published results of ``published_csv`` beside the measured ones) and, when ``fig3`` is given
    (dataset -> the content of its fig3.json; empty: no curves), reports/claims.tex
    (:func:`render_claims` of the metrics with ``fig3`` under the key ``"fig3"``); else None."""
    from ddm.report.tables import render_tables

    tables = render_tables(metrics, published_csv)
    return tables, None if fig3 is None else render_claims({**metrics, "fig3": fig3})
