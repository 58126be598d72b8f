"""The criteria behind ddm.claims' verdicts: the verdicts, the thresholds and margins stated once,
the conditions (true, false, borderline or unknown) and how they combine, and the formatting of the
evidence. A threshold here is rendered into each claim's criterion text (ddm.claims.CLAIMS), so
what the report says and what the code checks cannot drift apart."""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from ddm.stats import CPU_REL

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "NOT_TESTED", "BORDERLINE", "VERDICTS", "ALPHA", "CLOSE_RATIO", "FLAT_REL",
           "CPU_REL", "P_BAND", "TABLE1_NFES", "SHORT_NFE", "LONG_NFE", "TABLE2_NFES", "TABLE5_NFE", "DDM", "DDPM",
           "SDE", "DDPM_X0", "NAMES", "BEST_FAMILY", "TASKS", "SAMPLE_SETS", "Check", "verdict", "by_p", "ahead",
           "all_hold", "at_most", "esc", "fmt_num", "fmt_p", "fmt_value", "method_name", "fmt_unit", "datasets_of",
           "absent"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTED = "not tested in this run"
BORDERLINE = "borderline"
#: Every verdict, in the order the report counts them.
VERDICTS = (REPRODUCED, NOT_REPRODUCED, BORDERLINE, NOT_TESTED)

#: Significance level of every t-test (Table 1: "p-value < 0.05 based on the two sample t-test").
ALPHA = 0.05
#: "Close" (Table 1): DDM's FID at NFE 10 is at most this many times its FID at NFE 1000: no
#: further than the paper's own Table 1 puts it (13.92 / 2.40 = 5.8 on CIFAR-10, 27.45 / 7.10 = 3.9
#: on CelebA-HQ-256), so a run that reproduces the paper's gap passes and a wider gap fails.
CLOSE_RATIO = 6.0
#: "Flat" (Table 3): at every NFE of Table 3, DDM's mean metric is within this fraction of its mean at
#: the fewest steps, shown by an equivalence test over the sample sets (ddm.stats.within, p <
#: ALPHA); "improves": DDPM's mean at the most steps is better than at the fewest by more than this
#: fraction, shown by a one-sided Welch test (ddm.stats.beyond, p < ALPHA). Fixed before any run
#: with at least 3 sample sets per Table 3 column (params.yaml, table3.repeats).
FLAT_REL = 0.05
# Margins: two means closer than CPU_REL (ddm.stats: how far a number moves between CPUs), or a ratio
# within twice it of its threshold, make a borderline condition (ahead, at_most); so does a p inside
# P_BAND (by_p).

#: The p-values a verdict calls borderline: within a factor 2 of ALPHA on either side. Below it the
#: test is significant, above it not; inside it a CPU's numerics could decide.
P_BAND = (ALPHA / 2, 2 * ALPHA)
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

#: The unit of a t-test when its column names none: repeated sample sets of one trained network
#: per method (the criteria say so; a column of training-seed replicates names its own ``unit``).
SAMPLE_SETS = "sample sets"

Check = tuple  # (True | False | BORDERLINE | None, evidence text)


def verdict(oks: Iterable[bool | str | None]) -> str:
    """Any false -> not reproduced; else any borderline -> borderline; else any unknown (or none
    at all) -> not tested; else reproduced."""
    oks = list(oks)
    if any(ok is False for ok in oks):
        return NOT_REPRODUCED
    if any(ok == BORDERLINE for ok in oks):
        return BORDERLINE
    return NOT_TESTED if not oks or any(ok is None for ok in oks) else REPRODUCED


def by_p(p: float) -> bool | str:
    """A significance condition: p below :data:`P_BAND` -> True, inside it -> borderline, above -> False."""
    return True if p < P_BAND[0] else BORDERLINE if p < P_BAND[1] else False


def ahead(a: float, b: float, lower_is_better: bool = True) -> bool | str:
    """``a`` better than ``b``: True / False, or borderline when they are within :data:`CPU_REL` of each other."""
    if abs(a - b) <= CPU_REL * max(abs(a), abs(b)):
        return BORDERLINE
    return a < b if lower_is_better else a > b


def all_hold(oks: Iterable[bool | str]) -> bool | str:
    """Conditions that must all hold, as one: False if any is, else borderline if any is, else True."""
    oks = list(oks)
    return False if any(ok is False for ok in oks) else BORDERLINE if BORDERLINE in oks else True


def at_most(x: float, threshold: float) -> bool | str:
    """``x <= threshold``, borderline within twice :data:`CPU_REL` of it (a ratio of two numbers that each move)."""
    if abs(x - threshold) <= 2 * CPU_REL * threshold:
        return BORDERLINE
    return x <= threshold


# -- formatting -------------------------------------------------------------------------------
def esc(text: str) -> str:
    from ddm.report.labels import latex_escape

    return latex_escape(text)


def fmt_num(x: float) -> str:
    return f"{x:.4g}"


def fmt_p(p: float | None) -> str:
    return "undefined" if p is None or math.isnan(p) else f"{p:.2g}"


def fmt_value(r: Mapping) -> str:
    """A result (mean, std, n) as 'mean $\\pm$ std' (the mean alone for one repeat)."""
    return fmt_num(r["mean"]) + (rf" $\pm$ {r['std']:.2g}" if r.get("std") is not None else "")


def method_name(method: str) -> str:
    return NAMES.get(method) or esc(method)


def fmt_unit(column: Mapping, n_a: int, n_b: int) -> str:
    return f"{n_a} vs {n_b} {esc(column.get('unit') or SAMPLE_SETS)}"


def datasets_of(metrics: Mapping) -> list[tuple[str, Mapping]]:
    return sorted(metrics.get("datasets", {}).items())


def absent(what: str) -> list[Check]:
    return [(None, what)]
