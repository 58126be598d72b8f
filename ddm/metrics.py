"""Evaluation metrics: FID (through torch-fidelity), PSNR (super-resolution) and MAE (saliency).

FID
---
Features are extracted with torch-fidelity's machinery (its feature-extractor registry and
``torch_fidelity.utils.get_featuresdict_from_dataset``); statistics and the Fréchet distance use
torch-fidelity's own ``fid_features_to_statistics`` / ``fid_statistics_to_metric``.

The extractors are registered by name (``ddm.extractors``: the package's two, torch-fidelity's
InceptionV3 and the digits classifier, the same way as a plug-in's, :func:`register_extractor`).

torch-fidelity's own statistics cache is keyed by input name and extractor name only (not the
weights file), so it is never used: reference statistics live in our own ``.npz``
(``ddm.fidstats.reference_stats``), which records the extractor, the feature layer, the sha256 of the
weights file and the sample count; :func:`fid` refuses to compare samples against a reference
made with another extractor or other weights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)

from ddm.extractors import (INCEPTION, INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_URL,  # noqa: F401 (re-exported)
                            default_inception_weights_path, fetch_inception_weights, register_extractor,
                            resolve_weights)
from ddm.io import file_checksum, load_npz
from ddm.names import EXTRACTORS
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

__all__ = ["INCEPTION", "INCEPTION_WEIGHTS_FILENAME", "INCEPTION_WEIGHTS_URL", "register_extractor",
           "ReferenceMismatchError", "default_inception_weights_path", "fetch_inception_weights", "resolve_weights",
           "extract_features", "feature_statistics", "frechet_distance", "load_reference_stats", "checked_reference",
           "fid", "rgb_to_y", "psnr", "mae"]

#: The feature layer used for FID, per extractor (torch-fidelity's names): ``ddm.names.EXTRACTORS``.
FID_FEATURE_LAYER = EXTRACTORS

STATS_FORMAT = "ddm-fid-reference-v1"


class ReferenceMismatchError(ValueError):
    """Samples and reference statistics were (or would be) made with different extractors/weights."""


# --------------------------------------------------------------------------------------------
# Feature extraction and FID
# --------------------------------------------------------------------------------------------


class _UInt8Images(Dataset):
    """uint8 images (N,C,H,W), C in {1,3}, served as (3,H,W) uint8 tensors for torch-fidelity."""

    def __init__(self, images):
        x = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
        if x.dtype != torch.uint8:
            raise TypeError(
                f"FID inputs must be uint8 images in [0, 255], got {x.dtype}: convert model-range images in [-1, 1] "
                f"with ddm.datasets.to_uint8"
            )
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"FID inputs must be (N,C,H,W) with C in (1, 3) or (N,H,W), got {tuple(x.shape)}")
        if len(x) < 2:
            raise ValueError("FID needs at least 2 images")
        self.x = x.cpu().contiguous()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i]
        return img.expand(3, -1, -1) if img.shape[0] == 1 else img


def extract_features(
    images_uint8,
    extractor: str,
    weights_path: str | os.PathLike | None,
    *,
    batch_size: int = 500,
    cuda: bool | None = None,
) -> np.ndarray:
    """FID features (N, D) float64 of uint8 images, through torch-fidelity's feature extraction."""
    weights = resolve_weights(extractor, weights_path)
    cuda = torch.cuda.is_available() if cuda is None else bool(cuda)
    fe = create_feature_extractor(
        extractor,
        [FID_FEATURE_LAYER[extractor]],
        cuda=cuda,
        feature_extractor_weights_path=str(weights),
        verbose=False,
    )
    feats = get_featuresdict_from_dataset(
        _UInt8Images(images_uint8), fe, batch_size, cuda, save_cpu_ram=True, verbose=False
    )[FID_FEATURE_LAYER[extractor]]
    return feats.to(torch.float64).numpy()


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of features (N, D) in float64 — torch-fidelity's ``fid_features_to_statistics``
    (mean and unbiased covariance, rows are samples)."""
    f = torch.as_tensor(np.asarray(features, dtype=np.float64))
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N>=2, D), got {tuple(f.shape)}")
    st = fid_features_to_statistics(f)
    return np.asarray(st["mu"], np.float64), np.atleast_2d(np.asarray(st["sigma"], np.float64))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):

        d^2 = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)),

    computed by torch-fidelity's ``fid_statistics_to_metric`` (Tr of the square root as the sum
    of the square roots of the eigenvalues of sigma1 sigma2), in float64.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    out = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    return float(out[KEY_METRIC_FID])


def load_reference_stats(path: str | os.PathLike) -> dict:
    """Read a reference statistics file written by ``ddm.fidstats.reference_stats``, its checksum
    verified (``ddm.io.load_npz``: an ``InputError`` naming the file if it changed since)."""
    z = load_npz(path, "FID reference file", "ddm refstats")
    if "format" not in z or str(z["format"]) != STATS_FORMAT:
        raise ValueError(f"{path} is not a ddm FID reference statistics file")
    return {
        "mu": z["mu"],
        "sigma": z["sigma"],
        "extractor": str(z["extractor"]),
        "feature_layer": str(z["feature_layer"]),
        "weights_sha256": str(z["weights_sha256"]),
        "num_samples": int(z["num_samples"]),
        "torch_fidelity_version": str(z["torch_fidelity_version"]),
        **({"kid_features": z["kid_features"]} if "kid_features" in z else {}),  # KID's reference rows (ddm.kid)
    }


def checked_reference(ref_stats_path, extractor: str, weights_path) -> tuple[dict, Path, str]:
    """(reference statistics, weights file, its sha256) once the reference is known to be made
    with this extractor, feature layer and weights file; else :class:`ReferenceMismatchError`."""
    weights = resolve_weights(extractor, weights_path)
    ref = load_reference_stats(ref_stats_path)
    digest = file_checksum(weights, memo=True)
    if ref["extractor"] != extractor or ref["feature_layer"] != FID_FEATURE_LAYER[extractor]:
        raise ReferenceMismatchError(f"reference {ref_stats_path} was made with extractor {ref['extractor']!r} (layer "
                                     f"{ref['feature_layer']}), samples use {extractor!r} (layer {FID_FEATURE_LAYER[extractor]})")
    if ref["weights_sha256"] != digest:
        raise ReferenceMismatchError(f"reference {ref_stats_path} was made with weights sha256={ref['weights_sha256']}, "
                                     f"but {weights} has sha256={digest}: recompute the reference statistics")
    return ref, weights, digest


def fid(
    samples_uint8,
    ref_stats_path: str | os.PathLike,
    extractor: str,
    weights_path: str | os.PathLike | None,
    batch_size: int = 500,
    *,
    cuda: bool | None = None,
    on_features=None,
) -> dict:
    """FID of uint8 samples (N,C,H,W), C in {1,3}, against reference statistics (``on_features``,
    if given, is called with the samples' features: KID, ``ddm.kid``).

    Raises :class:`ReferenceMismatchError` when the reference was made with another extractor,
    feature layer or weights file (by sha256), and :class:`MissingWeightsError` when the weights
    are missing. Returns ``{"fid", "num_samples", "extractor", "reference", "weights_sha256"}``;
    ``reference`` is ``"<stats file name> (n=<reference sample count>)"``.
    """
    ref, weights, digest = checked_reference(ref_stats_path, extractor, weights_path)
    feats = extract_features(samples_uint8, extractor, weights, batch_size=batch_size, cuda=cuda)
    if on_features is not None:
        on_features(feats)
    mu, sigma = feature_statistics(feats)
    return {
        "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
        "num_samples": int(feats.shape[0]),
        "extractor": extractor,
        "reference": f"{Path(ref_stats_path).name} (n={ref['num_samples']})",
        "weights_sha256": digest,
    }


# --------------------------------------------------------------------------------------------
# PSNR and MAE
# --------------------------------------------------------------------------------------------

# ITU-R BT.601 luma as in MATLAB's rgb2ycbcr, for R, G, B in [0, 1]: Y = 16/255 + (65.481 R +
# 128.553 G + 24.966 B)/255, so Y lies in [16/255, 235/255].
_BT601_Y = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(img, data_range: float = 255) -> np.ndarray:
    """Y of YCbCr (ITU-R BT.601, MATLAB ``rgb2ycbcr``) of an RGB image (..., 3, H, W) whose values
    lie in [0, data_range]; returned on the same scale, in float64, without rounding."""
    x = np.asarray(img, np.float64)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected RGB (...,3,H,W), got {x.shape}")
    return data_range * 16.0 / 255.0 + np.tensordot(_BT601_Y, x, axes=([0], [x.ndim - 3]))


def _as_image_list(x, name: str) -> list[np.ndarray]:
    """A batch (N,C,H,W), one image (C,H,W) or (H,W), or a sequence of images -> list of float64 arrays."""
    if isinstance(x, (list, tuple)):
        return [np.asarray(i.detach().cpu() if torch.is_tensor(i) else i, np.float64) for i in x]
    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, np.float64)
    if a.ndim == 4:
        return list(a)
    if a.ndim in (2, 3):
        return [a]
    raise ValueError(f"{name}: expected (N,C,H,W), (C,H,W), (H,W) or a list of images, got {a.shape}")


def psnr(pred_uint8_or_float, target, *, data_range: float = 255, crop_border: int = 4, y_channel: bool = True) -> float:
    """Mean PSNR (dB) over images, following the super-resolution practice of Table 2's peers
    (NTIRE/DIV2K, BasicSR):

    - images are channel-first RGB (N,3,H,W), one (3,H,W), grey (N,1,H,W)/(H,W), or a list of
      such images (sizes may differ); values in [0, data_range] (uint8 outputs: data_range=255;
      quantise model outputs to uint8 first, as the published numbers do);
    - ``crop_border`` pixels are removed from each side (the scale factor: 4 for x4);
    - with ``y_channel`` (default), RGB images are compared on the Y channel of YCbCr, ITU-R
      BT.601 as MATLAB ``rgb2ycbcr``: Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255 for 8-bit
      R, G, B; Y is kept in float (not rounded to uint8, as BasicSR does);
    - per image PSNR = 10 log10(data_range^2 / MSE), then the mean over images (an image with
      MSE 0 gives +inf).
    """
    preds, targets = _as_image_list(pred_uint8_or_float, "pred"), _as_image_list(target, "target")
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions vs {len(targets)} targets")
    values = []
    for p, t in zip(preds, targets):
        if p.shape != t.shape:
            raise ValueError(f"shape mismatch {p.shape} vs {t.shape}")
        if y_channel and p.ndim == 3 and p.shape[0] == 3:
            p, t = rgb_to_y(p, data_range), rgb_to_y(t, data_range)
        if crop_border:
            c = int(crop_border)
            p, t = p[..., c:-c, c:-c], t[..., c:-c, c:-c]
            if p.size == 0:
                raise ValueError(f"crop_border={crop_border} leaves no pixels")
        mse = float(np.mean((p - t) ** 2))
        values.append(math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse))
    return float(np.mean(values))


def mae(pred, gt) -> float:
    """Saliency MAE: per image mean |pred - gt| with both maps in [0, 1] (uint8 maps are divided
    by 255), averaged over images. Accepts batches (N,...,H,W), one (H,W) map, or lists of maps
    of different sizes."""

    def prep(x, name):
        is_u8 = (torch.is_tensor(x) and x.dtype == torch.uint8) or (isinstance(x, np.ndarray) and x.dtype == np.uint8)
        if isinstance(x, (list, tuple)):
            out = []
            for i in x:
                out.extend(prep(i, name))
            return out
        a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x)
        a = a.astype(np.float64) / 255.0 if is_u8 else a.astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1] (or be uint8)")
        return list(a) if a.ndim >= 3 else [a]

    ps, gs = prep(pred, "pred"), prep(gt, "gt")
    if len(ps) != len(gs):
        raise ValueError(f"{len(ps)} predictions vs {len(gs)} ground truths")
    vals = []
    for p, g in zip(ps, gs):
        if p.shape != g.shape:
            raise ValueError(f"shape mismatch {p.shape} vs {g.shape}")
        vals.append(float(np.mean(np.abs(p - g))))
    return float(np.mean(vals))
