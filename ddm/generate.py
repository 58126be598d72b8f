"""Sampling from an experiment (``ddm.experiment``): its sampler, time grid and options bound once
by their params.yaml names (``ddm.registry.bind_sampler``), samples one per seed (Alg. 2 / Eq. 11 for DDM, the
baselines' Euler-Maruyama, ...), FID against training step from a model's snapshots
(:func:`checkpoint_fids`, :func:`convergence_rows`), the conditioned tasks' samples of a test split
(Tables 2 and 3: :func:`sample_split`, :func:`sample_sets`), and Fig. 3's x0 MSE along the reverse
steps.

Apart from ``ddm.experiment`` so that training imports no sampler code (ddm.codedeps: a fixed
sampler reruns the sample jobs, not the training).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ddm.conditioning import bind as bind_condition
from ddm.experiment import Experiment
from ddm.io import InputError
from ddm.modelfile import sample_seeds
from ddm.registry import bind_sampler
from ddm.sampling import SampleRNG

if TYPE_CHECKING:
    from ddm.conditioned import TaskExperiment

__all__ = ["generate", "checkpoint_fids", "convergence_rows", "sample_split", "sample_sets",
           "x0_mse_curve"]


@torch.no_grad()
def generate(exp: Experiment, net: nn.Module, nfe: int, seeds: list[int], *, batch_size: int = 500,
             device: str | torch.device = "cpu", callback=None, cond: Tensor | None = None) -> Tensor:
    """Samples in the model's range, one per seed, in batches (pixels independent of batch size),
    by the experiment's sampling bound once (``ddm.registry.bind_sampler``: sampler, grid and options).
    ``cond`` (one condition per seed, a conditioned network's): sample i sees ``cond[i]``
    (``ddm.conditioning.bind``), so every method given the same seeds sees the same conditions."""
    shape = (exp.cfg["channels"], exp.cfg["resolution"], exp.cfg["resolution"])
    draw = bind_sampler(exp.cfg["sampling"], exp.process)
    if cond is not None and len(cond) != len(seeds):
        raise ValueError(f"{len(cond)} conditions for {len(seeds)} seeds: give one condition per sample")
    out = []
    for i in range(0, len(seeds), batch_size):
        rng = SampleRNG(seeds[i : i + batch_size], device)
        noise = exp.process.prior_sample(rng, shape)
        model = net if cond is None else bind_condition(net, cond[i : i + batch_size].to(device))
        out.append(draw(model, noise, nfe, rng=rng, callback=callback).cpu())
    return torch.cat(out)


def checkpoint_fids(exp: Experiment, model: nn.Module, snapshots, nfes: list[int], seeds: list[int],
                    score: Callable[[Tensor], dict], *, batch_size: int = 500, device: str | torch.device = "cpu") -> list[dict]:
    """FID against training step: the EMA weights of each ``(step, state_dict)`` snapshot
    sampled at each NFE with the experiment's sampler and scored by ``score`` (uint8 samples ->
    dict with ``fid``). Shows whether a model sits on its FID plateau (the embedded preset's
    convergence figure)."""
    from ddm.datasets import to_uint8

    rows = []
    for step, state in snapshots:
        model.load_state_dict(state)
        model.eval()
        for nfe in nfes:
            x = generate(exp, model, nfe, seeds, batch_size=batch_size, device=device)
            rows.append({"step": int(step), "nfe": int(nfe), **score(to_uint8(x.clamp(-1, 1)))})
    return rows


def convergence_rows(exp: Experiment, model: nn.Module, snapshots: list[dict], nfes: list[int], num_samples: int,
                     reference, extractor: str, weights, *, device: str | torch.device = "cpu") -> list[dict]:
    """The rows of ``ddm convergence``: :func:`checkpoint_fids` of a model file's ``snapshots``
    (``[{"step", "ema"}]``, ``ddm.training.snapshots``) at each NFE of ``nfes``, ``num_samples``
    samples with the seeds of repeat 0, each scored by ``ddm.metrics.fid`` against the reference
    statistics file ``reference`` with the FID extractor ``extractor`` (weights file ``weights``).
    A model trained without snapshots is an InputError (one line: what to change in params.yaml)."""
    from ddm.metrics import fid

    if not snapshots:
        raise InputError("the model holds no snapshots to score: list its method under the preset's "
                         "`convergence: methods` in params.yaml and train it again")
    return checkpoint_fids(exp, model, [(s["step"], s["ema"]) for s in snapshots], nfes, sample_seeds(0, num_samples),
                           lambda u8: fid(u8, reference, extractor, weights), device=device)


def sample_split(exp: "TaskExperiment", net: nn.Module, split: Mapping, nfe: int, seeds: list[int], *,
                 batch_size: int = 256, device: str | torch.device = "cpu",
                 autoencoder: nn.Module | None = None) -> Tensor:
    """uint8 samples (N, C, R, R) for Tables 2 and 3, sample i conditioned on ``split["cond"][i]``
    with seed ``seeds[i]`` (the method's own sampler at ``nfe`` steps, §5.3). Inpainting with
    ``paste_known`` (default; LaMa's evaluation): the known pixels of the input. A latent task
    (§5.1) samples latents and decodes them with ``autoencoder`` (required for it)."""
    from ddm.datasets import to_uint8

    latent = "latent" in exp.cfg
    if latent and autoencoder is None:
        raise InputError(f"the {exp.cfg['task']} model samples latents: pass its autoencoder "
                         "(--autoencoder, written by `ddm train-autoencoder`)")
    x = generate(exp, net, nfe, seeds, batch_size=batch_size, device=device, cond=split["cond"])
    if latent:
        from ddm.autoencoder import decode_latents

        x = decode_latents(autoencoder, x, batch_size)
    out = to_uint8(x.clamp(-1, 1))
    if exp.cfg["sampling"].get("paste_known"):
        out = torch.where(split["mask"].bool(), out, split["image_uint8"])
    return out


def sample_sets(exp: "TaskExperiment", net: nn.Module, split: Mapping, sets: Iterable[tuple[int, int]], *,
                batch_size: int = 256, device: str | torch.device = "cpu",
                autoencoder: nn.Module | None = None) -> Iterator[tuple[tuple[int, int], Tensor]]:
    """The sample sets of ``ddm sample-task`` (Tables 2 and 3), one at a time: for each ``(nfe,
    repeat)`` of ``sets``, that pair and the uint8 samples of :func:`sample_split` with the seeds
    of FID repeat ``repeat`` (``ddm.modelfile.sample_seeds``): the same for every method, sample i
    <-> condition i."""
    for nfe, repeat in sets:
        seeds = sample_seeds(repeat, len(split["target"]))
        yield (nfe, repeat), sample_split(exp, net, split, nfe, seeds, batch_size=batch_size, device=device,
                                          autoencoder=autoencoder)


@torch.no_grad()
def x0_mse_curve(exp: Experiment, net: nn.Module, nfe: int, seeds: list[int]) -> dict:
    """Fig. 3 (left): MSE between the predicted x0 at each reverse step and the final sample."""
    seen: list[tuple[float, Tensor]] = []
    final = generate(exp, net, nfe, seeds, batch_size=len(seeds),
                     callback=lambda i, t, x, x0: seen.append((float(t[0]), x0.detach().cpu())))
    return {"t": [t for t, _ in seen], "mse": [float((x0 - final).square().mean()) for _, x0 in seen]}
