"""KID, the Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"), beside FID.

FID is biased upward at small sample counts, so a table whose columns have different counts
(Table 1: 500 samples at NFE 10-50, fewer at NFE 1000/2000) cannot be read across its columns by
FID. KID, the unbiased estimate of the squared MMD between the two feature distributions under
the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, has no such bias: its expectation does not
depend on the sample count. We use torch-fidelity's estimator (``kid_features_to_metric``: the
mean and std over ``KID_SUBSETS`` random subsets of ``min(KID_SUBSET_SIZE, n_samples,
n_reference)`` rows of each side) on the same features as FID (``ddm.metrics.extract_features``).

KID needs features, not moments: the reference statistics file (``ddm refstats``,
``ddm.fidstats.reference_stats``) keeps at most :data:`REFERENCE_ROWS` reference feature rows (a
fixed random subset of a larger data set: :class:`RowSample`), and ``ddm evaluate`` keeps the
sample set's features while it streams its shards (never its pixels).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["KID_SUBSETS", "KID_SUBSET_SIZE", "KID_SEED", "REFERENCE_ROWS", "RowSample", "Reservoir", "kid",
           "reference_features"]

#: torch-fidelity's defaults: 100 subsets of 1,000 rows (fewer when a side has fewer rows).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: The subsets' seed (torch-fidelity's ``rng_seed``): a KID is a deterministic function of its features.
KID_SEED = 2020
#: Reference feature rows kept for KID: a fixed subset of a larger data set (80 MB of float32 at
#: Inception's 2,048 features), far more than a subset's 1,000.
REFERENCE_ROWS = 10_000


class RowSample:
    """Keeps a fixed random subset of at most ``limit`` of ``total`` feature rows that arrive in
    chunks, in their order (all of them when ``total <= limit``): the reference rows of KID."""

    def __init__(self, total: int, limit: int = REFERENCE_ROWS, seed: int = 0):
        self.total, self.seen, self.rows = int(total), 0, []
        if self.total <= limit:
            self.keep = None
        else:
            self.keep = np.sort(np.random.default_rng(seed).choice(self.total, limit, replace=False))

    def add(self, features) -> None:
        f = np.asarray(features, dtype=np.float32)
        if self.keep is None:
            self.rows.append(f)
        else:
            lo, hi = np.searchsorted(self.keep, [self.seen, self.seen + len(f)])
            self.rows.append(f[self.keep[lo:hi] - self.seen])
        self.seen += len(f)

    def features(self) -> np.ndarray:
        if self.seen != self.total:
            raise ValueError(f"{self.seen} feature rows arrived, {self.total} were announced")
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 0), np.float32)


class Reservoir:
    """At most ``limit`` feature rows of a stream of chunks of unknown total length: all of them
    while they fit, then a uniform random subset (reservoir sampling, Vitter's Algorithm R, with a
    fixed seed: the same stream keeps the same rows). A random subset of an i.i.d. sample is an
    i.i.d. sample, so KID stays unbiased, and ``ddm evaluate`` holds at most ``limit`` rows of a
    sample set's features however many shards it streams. Rows are kept as float32."""

    def __init__(self, limit: int = REFERENCE_ROWS, seed: int = KID_SEED):
        self.limit, self.seen, self.rng = int(limit), 0, np.random.default_rng(seed)
        self.rows: np.ndarray | None = None

    def add(self, features) -> None:
        f = np.asarray(features, dtype=np.float32)
        if self.rows is None:
            self.rows = np.empty((0, f.shape[1]), np.float32)
        room = max(0, self.limit - len(self.rows))
        if room:
            self.rows = np.concatenate([self.rows, f[:room]])
        for i, row in enumerate(f[room:], start=self.seen + room):  # row i of the stream (0-based)
            j = int(self.rng.integers(0, i + 1))
            if j < self.limit:  # kept with probability limit / (i + 1), in place of a uniform kept row
                self.rows[j] = row
        self.seen += len(f)

    def features(self) -> np.ndarray:
        return self.rows if self.rows is not None else np.zeros((0, 0), np.float32)


def kid(features, reference_features) -> dict[str, Any]:
    """KID of sample features (n, D), or a list of chunks of them, against reference features
    (m, D): ``{"kid", "kid_std", "kid_subset_size", "kid_subsets"}`` (torch-fidelity's unbiased
    MMD^2 estimate, cubic kernel)."""
    import torch
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    if isinstance(features, (list, tuple)):
        features = np.concatenate([np.asarray(c, dtype=np.float64) for c in features])
    f1 = torch.as_tensor(np.asarray(features, dtype=np.float64))
    f2 = torch.as_tensor(np.asarray(reference_features, dtype=np.float64))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"KID needs two sets of at least 2 feature rows of one width; got {tuple(f1.shape)} "
                         f"and {tuple(f2.shape)}")
    size = min(KID_SUBSET_SIZE, len(f1), len(f2))
    out = kid_features_to_metric(f1, f2, kid_subsets=KID_SUBSETS, kid_subset_size=size, rng_seed=KID_SEED,
                                 verbose=False)
    return {"kid": float(out[KEY_METRIC_KID_MEAN]), "kid_std": float(out[KEY_METRIC_KID_STD]),
            "kid_subset_size": size, "kid_subsets": KID_SUBSETS}


def reference_features(ref: dict, path: str | os.PathLike) -> np.ndarray:
    """The KID reference rows of a loaded reference statistics file (``kid_features``); a
    reference made before KID has none: one line naming the file and the fix."""
    from ddm.io import InputError

    if "kid_features" not in ref:
        raise InputError(f"reference statistics {path} hold no KID features (made before KID was added): delete "
                         "it and rerun (`snakemake all` rebuilds it with `ddm refstats`)")
    return np.asarray(ref["kid_features"])
