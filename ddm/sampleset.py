"""A sample set of ``ddm sample`` as uint8 images: the seeds of the set (or of one shard of it,
``ddm.shards``), the trained network or the sampler ceiling in its place, and the experiment's
sampler (``ddm.generate.generate``: Alg. 2 / Eq. 11 for DDM, the baselines' samplers).

The rules a request must meet (the set fits in this machine's memory, ``ddm.limits``; a shard
names its size, whole batches, ``ddm.shards``; the sampler ceiling has its training images) are
:func:`set_bounds`'s, which :func:`sample_set` applies too: a notebook user meets the same
one-line :class:`SampleSetError` as ``ddm sample``, which checks them before it loads the model.

Apart from ``ddm.generate`` so that only ``ddm sample`` runs the sampler ceiling
(``ddm.ceiling``; ``ddm.codedeps``: a change there reruns the sample jobs, not the tasks').
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ddm.datasets import to_model_range, to_uint8
from ddm.experiment import Experiment
from ddm.generate import generate
from ddm.io import InputError
from ddm.limits import samples_error
from ddm.modelfile import sample_seeds
from ddm.shards import SAMPLE_BATCH, shard_bounds, shard_size_error

__all__ = ["SampleSetError", "set_bounds", "sample_set"]


class SampleSetError(InputError):
    """A sample set request that cannot run: ``option`` names the argument (``num_samples``,
    ``shard``, ``shard_size``, ``training_images``), ``message`` starts with its value and says
    what would fix it; ``str()`` is ``"<option> <message>"``."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option} {message}")


def set_bounds(cfg: Mapping[str, Any], num_samples: int, *, shard: int | None = None, shard_size: int | None = None,
               batch_size: int = SAMPLE_BATCH, training_images: Any = None) -> tuple[int, int]:
    """[start, stop) of the samples a request for a set of ``num_samples`` of the resolved config
    ``cfg`` draws: the whole set, or shard ``shard`` of ``shard_size`` samples (whole batches of
    ``batch_size``, so the shards merge to the one-job set). :class:`SampleSetError` if the set
    would not fit in this machine's memory, a shard has no valid size or index, or ``sampling:
    denoiser: posterior_mean`` (the sampler ceiling) is asked for without ``training_images``
    (the images, or where they come from: anything but None)."""
    if msg := samples_error(num_samples, cfg["channels"], cfg["resolution"]):
        raise SampleSetError("num_samples", f"{num_samples}: {msg}")
    if cfg["sampling"]["denoiser"] == "posterior_mean" and training_images is None:
        raise SampleSetError("training_images", f"not given: the sampler ceiling (sampling: denoiser: posterior_mean) "
                             f"draws from its training images: pass ddm prepare's data/prepared/{cfg['dataset']}.pt")
    if shard is None:
        return 0, num_samples
    if shard_size is None:
        raise SampleSetError("shard", f"{shard} needs a shard size: pass the set's shard size (params.yaml shard_size)")
    if why := shard_size_error(shard_size, batch_size):
        raise SampleSetError("shard_size", f"{why} (batch size {batch_size})")
    try:
        return shard_bounds(shard, num_samples, shard_size)
    except ValueError as e:
        raise SampleSetError("shard", str(e).removeprefix("shard ")) from None


def sample_set(exp: Experiment, net: nn.Module | None, nfe: int, repeat: int, num_samples: int, *,
               shard: int | None = None, shard_size: int | None = None, batch_size: int = SAMPLE_BATCH, device="cpu",
               training_images: Tensor | None = None) -> Tensor:
    """uint8 samples (N, C, R, R) of FID repeat ``repeat`` of a set of ``num_samples``, drawn
    with ``exp``'s sampler at ``nfe`` steps, one per seed (``ddm.modelfile.sample_seeds``);
    ``shard``, ``shard_size``: only that shard of the set (:func:`set_bounds`), the same pixels as
    in the whole set. With ``sampling: denoiser: posterior_mean`` (the sampler ceiling, beyond the
    paper) the exact posterior mean of ``training_images`` (uint8, ``ddm prepare``'s) replaces
    ``net``: no network error."""
    start, stop = set_bounds(exp.cfg, num_samples, shard=shard, shard_size=shard_size, batch_size=batch_size,
                             training_images=training_images)
    if exp.cfg["sampling"]["denoiser"] == "posterior_mean":
        from ddm.ceiling import PosteriorMeanDenoiser

        net = PosteriorMeanDenoiser(to_model_range(training_images).to(device), exp.process)
    seeds = sample_seeds(repeat, num_samples)[start:stop]
    x = generate(exp, net, nfe, seeds, batch_size=batch_size, device=device)
    return to_uint8(x.clamp(-1, 1))
