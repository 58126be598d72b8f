"""Statistics for Table 1: mean ± std over repeated FID runs and the significance markers.

Table 1 of the paper marks a result with one of two markers: the best FID is lower than the
second best "with statistical significance (p-value < 0.05) based on the two sample t-test", or
the difference "is not statistical significant". :func:`mark_best` returns exactly these two
markers (``"significant"`` / ``"not_significant"``) and a third, ``"untested"``, when the test
cannot be run (fewer than 2 repeats of the best or the second-best method, or fewer than two
methods, or a t statistic that is undefined because both groups have zero variance and equal means).

The test is two-sided (scipy's default): the direction "best < second" is picked from the data,
so a one-sided p would halve the p-value after looking. Welch's unequal-variance test is the
default; Student's pooled-variance test is an option.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["CPU_REL", "summarize", "ttest", "one_sided", "beyond", "within", "mark_best", "SIGNIFICANT", "NOT_SIGNIFICANT", "UNTESTED"]

#: How far one number of a run moves when the same seeded run is made on another CPU (float kernels
#: differ, so "seeded" is bit-identical on one CPU only): measured 1.9-2.7 % (digits FIDs of the
#: converged run, AVX2 against AVX-512, docs/measurements.md), rounded up. The verdicts' margin
#: (ddm.claims) and the plateau check's (ddm.plateau).
CPU_REL = 0.03

SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not_significant"
UNTESTED = "untested"


def _values(values, name="values") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: no values")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: non-finite values {a}")
    return a


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}``; std is the sample standard deviation (ddof=1), NaN when n == 1."""
    a = _values(values)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else math.nan,
        "n": int(a.size),
    }


def ttest(a: Sequence[float], b: Sequence[float], equal_var: bool = False) -> dict:
    """Two-sample, two-sided t-test via ``scipy.stats.ttest_ind``.

    Welch's test by default (``equal_var=False``), Student's with ``equal_var=True``.
    Returns ``{"t", "p", "test": "welch" | "student"}``; t > 0 when mean(a) > mean(b).
    """
    xa, xb = _values(a, "a"), _values(b, "b")
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"t-test needs at least 2 values per group, got {xa.size} and {xb.size}")
    from scipy import stats  # here, not at import: a figure job would pay seconds for it

    r = stats.ttest_ind(xa, xb, equal_var=equal_var)
    return {"t": float(r.statistic), "p": float(r.pvalue), "test": "student" if equal_var else "welch"}


def one_sided(a: Sequence[float], b: Sequence[float], shift: float = 0.0) -> float:
    """p of Welch's one-sided t-test of H1: mean(a) - mean(b) > ``shift`` (``scipy.stats.ttest_ind``,
    ``alternative="greater"``, on ``a - shift``: a shift moves the mean and leaves the variance)."""
    xa, xb = _values(a, "a"), _values(b, "b")
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"t-test needs at least 2 values per group, got {xa.size} and {xb.size}")
    from scipy import stats

    p = float(stats.ttest_ind(xa - shift, xb, equal_var=False, alternative="greater").pvalue)
    if math.isnan(p):  # both groups constant: the difference is exact
        return 0.0 if xa.mean() - shift > xb.mean() else 1.0
    return p


def beyond(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """p of H1: mean(a) - mean(b) > ``margin`` (one-sided Welch, :func:`one_sided`): a shows a
    difference larger than ``margin``, in a's favour."""
    return one_sided(a, b, margin)


def within(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """p of an equivalence test (Schuirmann's two one-sided tests, TOST, Welch): H1 is
    |mean(a) - mean(b)| < ``margin``; the larger of the two one-sided p-values. A small p shows
    the two means equal within ``margin``; a large one shows nothing (too few or too noisy values
    cannot show equivalence, which is the point: "no significant difference" is not "flat")."""
    lower = one_sided(a, b, -margin)        # H1: mean(a) - mean(b) > -margin
    upper = one_sided(b, a, -margin)        # H1: mean(a) - mean(b) < margin
    return max(lower, upper)


def _untestable(summaries: dict, best: str, second: str | None) -> str:
    """Why the best of :func:`mark_best` cannot be t-tested against the second best ("" when it
    can): one method only, fewer than 2 repeats, or zero variance in both groups with equal means."""
    if second is None:
        return "only one method"
    n_best, n_second = summaries[best]["n"], summaries[second]["n"]
    if n_best < 2 or n_second < 2:
        return f"fewer than 2 repeats ({best}: {n_best}, {second}: {n_second})"
    if (
        summaries[best]["std"] == 0
        and summaries[second]["std"] == 0
        and summaries[best]["mean"] == summaries[second]["mean"]
    ):
        return "t statistic undefined (zero variance in both groups, equal means)"
    return ""


def mark_best(
    results: Mapping[str, Sequence[float]],
    lower_is_better: bool = True,
    alpha: float = 0.05,
    *,
    equal_var: bool = False,
) -> dict:
    """Table 1's marker for the best method among ``results`` (method -> repeated values).

    The best and second-best methods are chosen by mean (lowest for FID; ties keep the order of
    ``results``), then the best is t-tested against the second best (:func:`ttest`, Welch by
    default). Returns::

        {"best": name, "second": name | None, "marker": "significant" | "not_significant" |
         "untested", "p": float | None, "t": float | None, "test": "welch" | "student" | None,
         "alpha": alpha, "reason": str, "summaries": {name: summarize(values)}}

    ``"significant"``: p < alpha (the best mean is better, by construction). ``"untested"``: fewer
    than 2 methods, fewer than 2 repeats for the best or the second best (e.g. a peer's single
    published number), or an undefined p (both groups constant and equal).
    """
    if not results:
        raise ValueError("no results")
    summaries = {k: summarize(v) for k, v in results.items()}
    sign = 1.0 if lower_is_better else -1.0
    order = sorted(summaries, key=lambda k: sign * summaries[k]["mean"])  # stable: ties keep order
    best = order[0]
    second = order[1] if len(order) > 1 else None
    out = {
        "best": best,
        "second": second,
        "marker": UNTESTED,
        "p": None,
        "t": None,
        "test": None,
        "alpha": float(alpha),
        "reason": "",
        "summaries": summaries,
    }
    out["reason"] = _untestable(summaries, best, second)
    if out["reason"]:
        return out
    r = ttest(results[best], results[second], equal_var=equal_var)
    out.update(t=r["t"], p=r["p"], test=r["test"])
    if math.isnan(r["p"]):
        out["reason"] = "p-value undefined"
        return out
    significant = r["p"] < alpha and summaries[best]["mean"] != summaries[second]["mean"]
    out["marker"] = SIGNIFICANT if significant else NOT_SIGNIFICANT
    out["reason"] = f"{r['test']} t-test p={r['p']:.3g} {'<' if significant else '>='} {alpha}"
    return out
