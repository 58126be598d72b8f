import math

import numpy as np
import pytest
from scipy import stats as st

from ddm.stats import NOT_SIGNIFICANT, SIGNIFICANT, UNTESTED, mark_best, summarize, ttest

A = [13.92, 13.88, 13.97, 13.90, 13.95]
B = [14.10, 14.02, 14.25, 13.99, 14.18, 14.07]


def test_summarize_sample_std():
    s = summarize(A)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(np.mean(A), rel=1e-15)
    assert s["std"] == pytest.approx(np.std(A, ddof=1), rel=1e-15)
    # ddof=1 by hand for a tiny case: values 1, 3 -> mean 2, var ((1)^2 + (1)^2)/1 = 2
    assert summarize([1, 3]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    one = summarize([2.5])
    assert one["n"] == 1 and one["mean"] == 2.5 and math.isnan(one["std"])
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize("equal_var,name", [(False, "welch"), (True, "student")])
def test_ttest_equals_scipy(equal_var, name):
    r = ttest(A, B, equal_var=equal_var)
    ref = st.ttest_ind(A, B, equal_var=equal_var)
    assert r["test"] == name
    assert r["t"] == ref.statistic and r["p"] == ref.pvalue
    assert r["t"] < 0  # mean(A) < mean(B)


def test_ttest_default_is_welch_and_differs_from_student():
    a, b = [1.0, 1.2, 0.8, 1.1], [2.0, 0.5, 3.0, 1.9, 2.6, 0.7, 2.2]  # unequal sizes and variances
    w, s = ttest(a, b), ttest(a, b, equal_var=True)
    assert w["test"] == "welch"
    assert w["p"] == st.ttest_ind(a, b, equal_var=False).pvalue
    assert s["p"] == st.ttest_ind(a, b, equal_var=True).pvalue
    assert w["p"] != s["p"]
    with pytest.raises(ValueError):
        ttest([1.0], b)


def test_mark_best_significant():
    res = {"LSGM": [27.64, 27.70, 27.58], "DDM": A, "CLD": [415.3, 415.4, 415.5]}
    m = mark_best(res)
    assert m["best"] == "DDM" and m["second"] == "LSGM"
    assert m["p"] == st.ttest_ind(A, res["LSGM"], equal_var=False).pvalue
    assert m["p"] < 0.05 and m["marker"] == SIGNIFICANT
    assert m["test"] == "welch"
    assert m["summaries"]["DDM"]["n"] == 5


def test_mark_best_not_significant():
    # Overlapping noisy repeats: means 5.09 vs 5.13, spread ~0.3.
    res = {"DDM": [5.09, 5.40, 4.80, 5.30, 4.86], "LSGM": [5.13, 4.83, 5.45, 5.20, 5.04]}
    m = mark_best(res)
    assert m["best"] == "DDM" and m["second"] == "LSGM"
    assert m["p"] == st.ttest_ind(res["DDM"], res["LSGM"], equal_var=False).pvalue
    assert m["p"] > 0.05 and m["marker"] == NOT_SIGNIFICANT


def test_mark_best_marker_follows_alpha():
    res = {"x": [1.0, 1.2, 0.9, 1.1], "y": [1.3, 1.5, 1.2, 1.45]}
    p = st.ttest_ind(res["x"], res["y"], equal_var=False).pvalue
    assert 0.001 < p < 0.05
    assert mark_best(res, alpha=0.05)["marker"] == SIGNIFICANT
    assert mark_best(res, alpha=p / 2)["marker"] == NOT_SIGNIFICANT


def test_mark_best_untested_and_direction():
    # A peer with a single published number: no test possible.
    m = mark_best({"DDM": A, "LSGM": [27.64]})
    assert m["marker"] == UNTESTED and m["p"] is None and m["best"] == "DDM"
    assert mark_best({"DDM": A})["marker"] == UNTESTED
    # Higher is better (e.g. PSNR).
    m = mark_best({"a": [28.3, 28.2, 28.4], "b": [27.6, 27.7, 27.5]}, lower_is_better=False)
    assert m["best"] == "a" and m["marker"] == SIGNIFICANT
    # Constant and equal repeats: undefined p -> untested.
    assert mark_best({"a": [1.0, 1.0], "b": [1.0, 1.0]})["marker"] == UNTESTED
