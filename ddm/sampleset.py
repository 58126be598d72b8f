"""A sample set of ``ddm sample`` as uint8 images: the seeds of the set (or of one shard of it,
``ddm.shards``), the trained network or the sampler ceiling in its place, and the experiment's
sampler (``ddm.generate.generate``: Alg. 2 / Eq. 11 for DDM, the baselines' samplers).

Apart from ``ddm.generate`` so that only ``ddm sample`` runs the sampler ceiling
(``ddm.ceiling``; ``ddm.codedeps``: a change there reruns the sample jobs, not the tasks').
"""

from __future__ import annotations

from torch import Tensor, nn

from ddm.datasets import to_model_range, to_uint8
from ddm.experiment import Experiment
from ddm.generate import generate
from ddm.modelfile import sample_seeds
from ddm.shards import SAMPLE_BATCH

__all__ = ["sample_set"]


def sample_set(exp: Experiment, net: nn.Module | None, nfe: int, repeat: int, num_samples: int, *,
               bounds: tuple[int, int] | None = None, batch_size: int = SAMPLE_BATCH, device="cpu",
               training_images: Tensor | None = None) -> Tensor:
    """uint8 samples (N, C, R, R) of FID repeat ``repeat`` of a set of ``num_samples``, drawn
    with ``exp``'s sampler at ``nfe`` steps, one per seed (``ddm.modelfile.sample_seeds``);
    ``bounds``: only samples [start, stop) of the set (a shard, ``ddm.shards.shard_bounds``),
    the same pixels as in the whole set when the shard holds whole batches. With ``sampling:
    denoiser: posterior_mean`` (the sampler ceiling, beyond the paper) the exact posterior mean of
    ``training_images`` (uint8, ``ddm prepare``'s) replaces ``net``: no network error."""
    if exp.cfg["sampling"]["denoiser"] == "posterior_mean":
        from ddm.ceiling import PosteriorMeanDenoiser

        if training_images is None:
            raise ValueError("denoiser posterior_mean: pass the training images (training_images=)")
        net = PosteriorMeanDenoiser(to_model_range(training_images).to(device), exp.process)
    seeds = sample_seeds(repeat, num_samples)[slice(*(bounds or (0, num_samples)))]
    x = generate(exp, net, nfe, seeds, batch_size=batch_size, device=device)
    return to_uint8(x.clamp(-1, 1))
