"""Streaming FID statistics: the mean and covariance of FID features accumulated chunk by chunk.

``ddm evaluate`` of a sharded sample set (``ddm.shards``) reads one shard at a time, extracts its
features (``ddm.metrics.extract_features``, torch-fidelity) and adds them to a
:class:`FeatureMoments`: the count, the sum and the sum of outer products of the features, in
float64. Only one shard's images and features are held at once, whatever the number of shards.
The reference statistics of a data set larger than :data:`CHUNK_BYTES` are made the same way
(:func:`reference_statistics`). The FID then equals the one-pass FID (torch-fidelity's
statistics of all features at once) up to float round-off (tests/test_fidstats.py: 1e-6).

The sums are taken about a shift, the mean of the first chunk (x - shift), so that the
covariance (sum of outer products - n mean mean^T) / (n - 1) does not lose digits to a large
mean. A metric that needs the features themselves (KID) gets each chunk's features through
``on_features`` of :func:`moments_of_chunks`: features are kept, never the pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = ["CHUNK_BYTES", "FeatureMoments", "image_chunks", "moments_of_chunks", "streaming_fid", "score_set",
           "reference_statistics", "reference_stats"]

#: Image bytes per chunk of a reference data set (uint8): a larger data set is streamed.
CHUNK_BYTES = 256 << 20


class FeatureMoments:
    """Count, sum and sum of outer products of feature rows (float64), about a fixed shift."""

    def __init__(self):
        self.count = 0
        self.shift: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features) -> "FeatureMoments":
        """Add the rows of ``features`` (n, D)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or (self.shift is not None and f.shape[1] != self.shift.size):
            want = "(n, D)" if self.shift is None else f"(n, {self.shift.size})"
            raise ValueError(f"features of shape {f.shape}: expected {want} rows of feature vectors")
        if not len(f):
            return self
        if self.shift is None:
            self.shift = f.mean(0)
            self.sum = np.zeros_like(self.shift)
            self.outer = np.zeros((f.shape[1], f.shape[1]))
        d = f - self.shift
        self.count += len(d)
        self.sum += d.sum(0)
        self.outer += d.T @ d
        return self

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma): the mean and the unbiased covariance, as ``ddm.metrics.feature_statistics``."""
        if self.count < 2:
            raise ValueError(f"FID statistics need at least 2 feature rows; got {self.count}")
        mean_d = self.sum / self.count
        sigma = (self.outer - self.count * np.outer(mean_d, mean_d)) / (self.count - 1)
        return self.shift + mean_d, (sigma + sigma.T) / 2


def image_chunks(images, chunk_bytes: int = CHUNK_BYTES) -> Iterable:
    """Slices of an image tensor (N, ...) of at most ``chunk_bytes`` each (at least one image)."""
    per_image = max(1, images[0].numel() * images.element_size()) if len(images) else 1
    step = max(1, chunk_bytes // per_image)
    for i in range(0, len(images), step):
        yield images[i : i + step]


def moments_of_chunks(chunks: Iterable, extractor: str, weights_path: str | os.PathLike, *, batch_size: int = 500,
                      cuda: bool | None = None, on_features: Callable[[np.ndarray], None] | None = None) -> FeatureMoments:
    """FID feature moments of uint8 image chunks, one chunk in memory at a time."""
    from ddm.metrics import extract_features

    moments = FeatureMoments()
    for images in chunks:
        # torch-fidelity takes 2 images at least: a chunk of one (the last shard) is fed twice
        single = len(images) == 1
        feats = extract_features(images.expand(2, *images.shape[1:]) if single else images, extractor,
                                 weights_path, batch_size=batch_size, cuda=cuda)[: len(images)]
        if on_features is not None:
            on_features(feats)
        moments.update(feats)
        del images, feats
    return moments


def streaming_fid(chunks: Iterable, ref_stats_path: str | os.PathLike, extractor: str,
                  weights_path: str | os.PathLike | None, *, batch_size: int = 500, cuda: bool | None = None,
                  on_features: Callable[[np.ndarray], None] | None = None) -> dict:
    """FID of a sample set given as chunks of uint8 images (e.g. a generator that loads one shard
    file at a time), against reference statistics: the record of ``ddm.metrics.fid``."""
    from ddm.metrics import checked_reference, frechet_distance

    ref, weights, digest = checked_reference(ref_stats_path, extractor, weights_path)
    moments = moments_of_chunks(chunks, extractor, weights, batch_size=batch_size, cuda=cuda, on_features=on_features)
    mu, sigma = moments.statistics()
    return {
        "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
        "num_samples": int(moments.count),
        "extractor": extractor,
        "reference": f"{os.path.basename(ref_stats_path)} (n={ref['num_samples']})",
        "weights_sha256": digest,
    }


def score_set(images, ref_stats_path: str | os.PathLike, extractor: str, weights_path: str | os.PathLike | None,
              reference_rows: np.ndarray) -> dict:
    """The record of ``ddm evaluate``: FID and KID (``ddm.kid``, against ``reference_rows``) of a
    sample set, given as one uint8 image tensor (the one-pass FID, ``ddm.metrics.fid``) or as an
    iterable of shards (:func:`streaming_fid`). Features are kept for KID, never the pixels: at most
    ``ddm.kid.REFERENCE_ROWS`` rows (``ddm.kid.Reservoir``), so memory does not grow with the shards."""
    from ddm.kid import Reservoir, kid
    from ddm.metrics import fid

    rows = Reservoir()  # at most ddm.kid.REFERENCE_ROWS feature rows, whatever the set's size
    if hasattr(images, "shape"):
        result = fid(images, ref_stats_path, extractor, weights_path, on_features=rows.add)
    else:
        result = streaming_fid(images, ref_stats_path, extractor, weights_path, on_features=rows.add)
    return {**result, **kid(rows.features(), reference_rows)}


def reference_statistics(images, extractor: str, weights_path: str | os.PathLike, *, batch_size: int = 500,
                         cuda: bool | None = None, chunk_bytes: int = CHUNK_BYTES,
                         on_features: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, n) of a reference data set: one pass when its images fit in ``chunk_bytes``
    (torch-fidelity's statistics of all features), else streamed chunk by chunk; ``on_features``
    sees the features in image order."""
    from ddm.metrics import extract_features, feature_statistics

    if len(images) * images[0].numel() * images.element_size() <= chunk_bytes:
        feats = extract_features(images, extractor, weights_path, batch_size=batch_size, cuda=cuda)
        if on_features is not None:
            on_features(feats)
        return (*feature_statistics(feats), int(feats.shape[0]))
    moments = moments_of_chunks(image_chunks(images, chunk_bytes), extractor, weights_path, batch_size=batch_size,
                                cuda=cuda, on_features=on_features)
    return (*moments.statistics(), int(moments.count))


def reference_stats(
    images_uint8,
    extractor: str,
    weights_path: str | os.PathLike | None,
    out_path: str | os.PathLike,
    *,
    batch_size: int = 500,
    cuda: bool | None = None,
) -> dict:
    """Compute mu, sigma of the reference images and write them to ``out_path`` (.npz, atomic).

    The file records: ``mu``, ``sigma``, ``extractor``, ``feature_layer``, ``weights_sha256``,
    ``num_samples``, ``format``, the torch-fidelity version and ``kid_features``: KID's reference
    rows (``ddm.kid.RowSample``). Returns that record (without the arrays) plus ``path``.
    """
    import torch_fidelity

    from ddm.io import file_checksum, save_npz
    from ddm.kid import RowSample
    from ddm.metrics import STATS_FORMAT, FID_FEATURE_LAYER, resolve_weights

    weights = resolve_weights(extractor, weights_path)
    rows = RowSample(len(images_uint8))
    mu, sigma, count = reference_statistics(images_uint8, extractor, weights, batch_size=batch_size, cuda=cuda,
                                            on_features=rows.add)
    record = {
        "format": STATS_FORMAT,
        "extractor": extractor,
        "feature_layer": FID_FEATURE_LAYER[extractor],
        "weights_sha256": file_checksum(weights, memo=True),
        "num_samples": count,
        "torch_fidelity_version": torch_fidelity.__version__,
    }
    arrays = {k: np.asarray(v) for k, v in record.items()}
    save_npz(Path(out_path), mu=mu, sigma=sigma, kid_features=rows.features(), **arrays)  # atomically, with its checksum (ddm.io)
    return {**record, "path": str(out_path)}
