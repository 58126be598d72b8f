"""The three image-conditioned tasks of Tables 2 and 3 (§5.1, §5.3), on data that ships with
scikit-learn and scikit-image (no download).

The paper's datasets (DIV2K, DUTS, CelebA-HQ) cannot be downloaded here; each task keeps the
paper's *problem* and metric on embedded data:

* **Super-resolution x4** (DIV2K in the paper; PSNR on the Y channel): patches of scikit-image's
  colour photos, high-resolution patch = x0, its bicubic x4 down-sampling (MATLAB ``imresize``,
  the DIV2K degradation) = the observation. The condition is the observation bicubically
  up-sampled back to the patch size (so that it lines up with x0 pixel for pixel). Training
  photos and test photos are different photos. Reference: bicubic up-sampling's PSNR.
* **Saliency detection** (DUTS; MAE): a digit (scikit-learn's digits) or a geometric shape
  pasted in a random colour on a tinted grey texture from ``skimage.data``; x0 = the pasted
  object's mask (1 channel), condition = the composite image. Train and test use disjoint digits
  and disjoint halves of each texture. Reference: the all-background mask's MAE.
* **Inpainting** (CelebA-HQ, FID; masks of Suvorov et al., 2022): scikit-learn's digits with
  holes drawn by :func:`ddm.masks.lama_mask`, our own implementation of the distribution of LaMa's
  training masks for CelebA-HQ 256 (a 50/50 mix of irregular thick strokes and boxes, lengths
  scaled by size/256). Each mask depends only on (seed, index, size): every method sees the same
  masks. x0 = the digit, condition = (masked digit, mask). Reference: the holes filled with the
  training set's mean colour (:func:`mean_fill`).

Every task returns a dict of tensors: ``target`` (N, C, R, R) and ``cond`` (N, C', R, R) in the
model range [-1, 1], plus the uint8 images its metric and reference need.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from ddm.datasets import to_model_range
from ddm.masks import example_rng, inpainting_masks

__all__ = [
    "SR_TRAIN_PHOTOS",
    "SR_TEST_PHOTOS",
    "TEXTURES",
    "cubic",
    "resize_matrix",
    "imresize",
    "bicubic_down",
    "bicubic_up",
    "MIN_PATCH_STD",
    "SHAPES",
    "sr_task",
    "sr_examples",
    "saliency_task",
    "saliency_examples",
    "inpainting_task",
    "inpainting_examples",
    "model_tensors",
    "mean_fill",
    "all_background_mae",
    "bicubic_psnr",
]

#: Photos of ``skimage.data`` for super-resolution: training and test photos are disjoint.
SR_TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SR_TEST_PHOTOS = ("chelsea", "coffee")
#: Grey textures of ``skimage.data`` behind the saliency objects (left half: train, right: test).
TEXTURES = ("brick", "grass", "gravel")


# -- bicubic resizing (MATLAB imresize, the DIV2K degradation) -----------------------------------
def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize``'s bicubic)."""
    x = np.abs(np.asarray(x, np.float64))
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of MATLAB ``imresize`` bicubic along one axis: output pixel i
    samples input position u = (i + 0.5) * in/out - 0.5; when shrinking by s = out/in < 1 the
    kernel is stretched to k(s d) s (anti-aliasing); indices past the border are mirrored
    (symmetric padding); every row is normalised to sum 1."""
    scale = out_size / in_size
    stretch = min(scale, 1.0)
    half = 2.0 / stretch
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        u = (i + 0.5) / scale - 0.5
        taps = np.arange(math.floor(u - half), math.ceil(u + half) + 1)
        k = stretch * cubic(stretch * (u - taps))
        idx = np.where(taps < 0, -taps - 1, taps)
        idx = np.where(idx >= in_size, 2 * in_size - idx - 1, idx)
        np.add.at(w[i], np.clip(idx, 0, in_size - 1), k)
    w /= w.sum(axis=1, keepdims=True)
    w.setflags(write=False)  # cached: shared by every caller
    return w


def imresize(x, out_hw: tuple[int, int]) -> Tensor:
    """Bicubic resize (MATLAB ``imresize``, separable) of (..., H, W) images, in float64, not
    rounded."""
    x = torch.as_tensor(x).to(torch.float64)
    wh = torch.tensor(resize_matrix(x.shape[-2], out_hw[0]))
    ww = torch.tensor(resize_matrix(x.shape[-1], out_hw[1]))
    return wh @ x @ ww.T


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def bicubic_down(hr_uint8: Tensor, scale: int = 4) -> Tensor:
    """x``scale`` bicubic down-sampling of uint8 images (N, C, H, W), rounded to uint8 as
    MATLAB ``imresize`` does for uint8 input (the DIV2K "bicubic" track)."""
    h, w = hr_uint8.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by the scale {scale}; crop it first")
    return _to_uint8(imresize(hr_uint8, (h // scale, w // scale)))


def bicubic_up(lr_uint8: Tensor, scale: int = 4) -> Tensor:
    """x``scale`` bicubic up-sampling of uint8 images, rounded to uint8 (Table 2's trivial
    super-resolution reference and the condition of :func:`sr_task`)."""
    h, w = lr_uint8.shape[-2:]
    return _to_uint8(imresize(lr_uint8, (h * scale, w * scale)))


def bicubic_psnr(task: dict) -> float:
    """PSNR (Y channel, border ``scale`` cropped: :func:`ddm.metrics.psnr`) of bicubic
    up-sampling against the high-resolution patches of :func:`sr_task`."""
    from ddm.metrics import psnr

    return psnr(task["cond_uint8"], task["hr_uint8"], crop_border=task["scale"])


# -- super-resolution ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"skimage.data.{name} is not an RGB photo (shape {img.shape})")
    img.setflags(write=False)  # cached
    return img


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_size(size: int, multiple: int, what: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % multiple:
        raise ValueError(f"{what} must be a positive multiple of {multiple}, got {size!r}")
    return size


#: A super-resolution patch needs this standard deviation (uint8 units) of its pixels: flat
#: patches (the black sky around hubble_deep_field or retina) would give an infinite PSNR.
MIN_PATCH_STD = 8.0


def _textured_patch(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The first of up to 100 random crops whose pixel std is at least ``MIN_PATCH_STD``."""
    for _ in range(100):
        r = int(rng.integers(0, img.shape[0] - size + 1))
        c = int(rng.integers(0, img.shape[1] - size + 1))
        patch = img[r:r + size, c:c + size]
        if patch.std() >= MIN_PATCH_STD:
            break
    return patch.transpose(2, 0, 1)


def sr_task(split: str = "train", n: int = 256, size: int = 32, scale: int = 4,
            seed: int = 0) -> dict:
    """Super-resolution x``scale`` on ``n`` random ``size`` x ``size`` patches of the split's
    photos (patch i: photo i mod #photos, position from the generator of (seed, i)).

    Returns ``target`` (HR, model range), ``cond`` (bicubic up-sampled LR, model range),
    ``hr_uint8``, ``lr_uint8``, ``cond_uint8`` and ``scale``."""
    _check_split(split)
    _check_size(size, scale, "size")
    names = SR_TRAIN_PHOTOS if split == "train" else SR_TEST_PHOTOS
    photos = [_photo(name) for name in names]
    patches = [_textured_patch(photos[i % len(photos)], example_rng(seed, i), size) for i in range(int(n))]
    return sr_examples(torch.from_numpy(np.stack(patches).copy()), scale)


def sr_examples(hr_uint8: Tensor, scale: int = 4) -> dict:
    """Super-resolution examples of high-resolution uint8 images (N, 3, H, W): the observation is
    their bicubic x``scale`` down-sampling, the condition that observation bicubically up-sampled
    back (:func:`sr_task`'s fields; DIV2K's images in the paper preset)."""
    lr = bicubic_down(hr_uint8, scale)
    fields = {"hr_uint8": hr_uint8, "lr_uint8": lr, "cond_uint8": bicubic_up(lr, scale), "scale": scale}
    return {**model_tensors("super_resolution", fields), **fields}


# -- saliency detection ---------------------------------------------------------------------------
SHAPES = ("disc", "square", "triangle", "ring")


def _shape_mask(kind: str, size: int) -> np.ndarray:
    """A ``size`` x ``size`` boolean mask of a centred geometric shape."""
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in (-1, 1)
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y)
    if kind == "disc":
        return r <= 0.95
    if kind == "ring":
        return (r <= 0.95) & (r >= 0.5)
    if kind == "square":
        return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    return (y <= 0.9) & (y >= 2 * np.abs(x) - 1.0)  # triangle, apex up


def _digit_mask(digit: np.ndarray, size: int) -> np.ndarray:
    """A digit (8x8 uint8, 0..255) resized bicubically to ``size`` and thresholded at half ink."""
    return imresize(digit / 255.0, (size, size)).numpy() > 0.5


@functools.lru_cache(maxsize=None)
def _textures(split: str) -> tuple[np.ndarray, ...]:
    import skimage.data

    out = []
    for name in TEXTURES:
        img = np.asarray(getattr(skimage.data, name)(), np.float64) / 255.0
        half = img.shape[1] // 2
        part = img[:, :half] if split == "train" else img[:, half:]
        part.setflags(write=False)  # cached
        out.append(part)
    return tuple(out)


def _saliency_example(rng: np.random.Generator, textures, digits, size: int):
    tex = textures[int(rng.integers(len(textures)))]
    r = int(rng.integers(0, tex.shape[0] - size + 1))
    c = int(rng.integers(0, tex.shape[1] - size + 1))
    tint = rng.uniform(0.4, 1.0, size=3)
    image = tex[r:r + size, c:c + size][None] * tint[:, None, None]
    obj = int(rng.integers(int(0.35 * size), int(0.7 * size) + 1))
    kind = int(rng.integers(len(SHAPES) + 1))  # one chance in five: a digit
    if kind == len(SHAPES):
        shape = _digit_mask(digits[int(rng.integers(len(digits)))], obj)
    else:
        shape = _shape_mask(SHAPES[kind], obj)
    top, left = (int(v) for v in rng.integers(0, size - obj + 1, size=2))
    mask = np.zeros((size, size), bool)
    mask[top:top + obj, left:left + obj] = shape
    colour = rng.uniform(0.0, 1.0, size=3)
    image = np.where(mask[None], colour[:, None, None], image)
    return np.round(image * 255).astype(np.uint8), mask


def saliency_task(split: str = "train", n: int = 256, size: int = 32, seed: int = 0) -> dict:
    """Saliency detection: ``n`` composites (a shape or a digit of the split's digits, in a
    random colour, pasted on a random crop of a tinted texture half). ``target`` is the object's
    mask (N, 1, R, R) in {-1, 1}, ``cond`` the composite; also ``image_uint8`` and
    ``mask_uint8`` (0/255, what :func:`ddm.metrics.mae` compares)."""
    from ddm.datasets import load_dataset

    _check_split(split)
    _check_size(size, 4, "size")
    digits, textures = load_dataset("digits", None, split)[:, 0].numpy(), _textures(split)
    pairs = [_saliency_example(example_rng(seed, i), textures, digits, size) for i in range(int(n))]
    image = torch.from_numpy(np.stack([p[0] for p in pairs]))
    mask = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.uint8) * 255)
    return saliency_examples(image, mask)


def saliency_examples(image_uint8: Tensor, mask_uint8: Tensor) -> dict:
    """Saliency examples of images (N, 3, R, R) and their grey-level masks (N, 1, R, R): the
    masks are binarised at half grey (DUTS' masks are anti-aliased at the edges; MAE compares
    binary 0/255 masks), ``target`` in {-1, 1}, ``cond`` the image (:func:`saliency_task`'s
    fields; DUTS in the paper preset)."""
    fields = {"image_uint8": image_uint8, "mask_uint8": (mask_uint8 >= 128).to(torch.uint8) * 255}
    return {**model_tensors("saliency", fields), **fields}


def all_background_mae(mask_uint8: Tensor) -> float:
    """MAE of predicting "no salient object" everywhere (Table 2's trivial saliency reference):
    the mean fraction of object pixels."""
    from ddm.metrics import mae

    return mae(torch.zeros_like(mask_uint8), mask_uint8)


# -- inpainting ----------------------------------------------------------------------------------
def mean_fill(image_uint8: Tensor, mask: Tensor, mean) -> Tensor:
    """The trivial inpainting reference: holes (mask 1) set to the per-channel ``mean`` colour
    (of the training images), rounded to uint8."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
    filled = torch.where(mask.bool(), mean, image_uint8.to(torch.float64))
    return _to_uint8(filled)


def inpainting_task(split: str = "train", n: int | None = None, size: int = 8,
                    seed: int = 0) -> dict:
    """Inpainting on the split's digits (all of them, or the first ``n``) at ``size`` x ``size``
    (8 = the digits' own size, which the digits FID extractor expects) with
    :func:`ddm.masks.inpainting_masks` of ``seed``. ``target`` is the digit, ``cond`` the masked digit
    (holes at 0, mid-grey) and the mask (holes 1, known -1): 2 channels. Also ``image_uint8``,
    ``mask`` (0/1 uint8), ``mean`` (the training digits' mean, for :func:`mean_fill`)."""
    from ddm.datasets import load_dataset

    _check_split(split)
    _check_size(size, 1, "size")
    x = load_dataset("digits", None, split, resolution=size)
    x = x[: int(n)] if n is not None else x
    train = load_dataset("digits", None, "train", resolution=size)
    return inpainting_examples(x, seed, train.to(torch.float64).mean(dim=(0, 2, 3)))


def inpainting_examples(x_uint8: Tensor, seed: int, mean: Tensor) -> dict:
    """Inpainting examples of uint8 images (N, C, R, R) with :func:`ddm.masks.inpainting_masks` of ``seed``:
    ``target`` the image, ``cond`` the masked image (holes at 0, mid-grey) and the mask (holes 1,
    known -1), C + 1 channels; ``mean`` (per channel, the training images') for :func:`mean_fill`
    (:func:`inpainting_task`'s fields; CelebA-HQ in the paper preset)."""
    fields = {"image_uint8": x_uint8, "mask": inpainting_masks(x_uint8.shape[0], x_uint8.shape[-1], seed),
              "mean": mean}
    return {**model_tensors("inpainting", fields), **fields}


#: The uint8 fields of a task file that :func:`model_tensors` reads (one entry per example).
MODEL_FIELDS = {"super_resolution": ("hr_uint8", "cond_uint8"), "saliency": ("mask_uint8", "image_uint8"),
                "inpainting": ("image_uint8", "mask")}


def model_tensors(task: str, fields: dict) -> dict:
    """``target`` and ``cond`` in the model range [-1, 1] from a task's uint8 fields (what a task
    file stores: ``ddm.conditioned.load_split`` makes these on reading): super-resolution the HR
    image and the up-sampled observation, saliency the mask and the image, inpainting the image
    and (masked image, holes at 0; mask, holes 1 and known -1)."""
    if task == "super_resolution":
        return {"target": to_model_range(fields["hr_uint8"]), "cond": to_model_range(fields["cond_uint8"])}
    if task == "saliency":
        return {"target": to_model_range(fields["mask_uint8"]), "cond": to_model_range(fields["image_uint8"])}
    if task == "inpainting":
        target, mask = to_model_range(fields["image_uint8"]), fields["mask"]
        return {"target": target,
                "cond": torch.cat([target.masked_fill(mask.bool(), 0.0), mask.float() * 2 - 1], dim=1)}
    raise ValueError(f"unknown task {task!r}")
