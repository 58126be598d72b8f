"""From an experiment and its training data to a model file: the steps ``ddm train`` and ``ddm
train-task`` share, callable as they are from a notebook.

:func:`fit` trains the network of a built experiment (``ddm.experiment.build``, or
``ddm.conditioned.build_task``) with :func:`ddm.training.train` (Alg. 1: the objective of Eq. 10
for DDM, Eq. 4 for the baselines; resumable and preemptible), in the checkpoint folder of its
config (:func:`checkpoint_dir`), and writes the EMA weights (§B.3) as a model file
(``ddm.modelfile``), with the EMA weights of every kept checkpoint when the config asks for
``snapshots`` (FID against training step), and the loss curve. :func:`train_config` reads a
resolved config's ``train`` block.

No sampler code (``ddm.generate``, ``ddm.sampling``): a fixed sampler does not rerun the
training (``ddm.codedeps``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ddm.io import atomic_write, writing
from ddm.modelfile import save_model
from ddm.training import TrainConfig, ema_model, init_distributed, snapshots, train

__all__ = ["train_config", "checkpoint_dir", "fit"]


def train_config(cfg: Mapping, where: str) -> TrainConfig:
    """The :class:`ddm.training.TrainConfig` of a resolved config's ``train`` block; a
    ``ConfigError`` naming its place in params.yaml (``where``) if it does not make one."""
    from ddm.config import ConfigError

    try:
        return TrainConfig(**cfg["train"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None


def checkpoint_dir(root: str | os.PathLike, name: str, config_hash: str) -> Path:
    """The checkpoint folder of a config under ``root``: ``<name>-<config_hash>``, so a changed
    config starts afresh and an unchanged one resumes."""
    return Path(root) / f"{name}-{config_hash}"


def fit(exp, data, tcfg: TrainConfig, ckpt_dir: str | os.PathLike, out: str | os.PathLike, *, config_hash: str,
        curve: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> bool:
    """Train ``exp``'s network on ``data`` (model range; a tensor, or what the trainer reads of
    one, e.g. ``ddm.conditioned.PackedSplit``) with the ``train`` options ``tcfg``, resuming
    from ``ckpt_dir``, and write the EMA weights to the model file ``out`` and the loss curve
    (the trainer's metrics.csv) to ``curve``, each atomically. The seed is the config's
    ``train: seed``; under torchrun (``WORLD_SIZE`` > 1) the process group is set up first.
    False on the processes of a distributed run other than rank 0 (which write nothing)."""
    ckpt_dir = Path(ckpt_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed()
    torch.manual_seed(exp.cfg["train"]["seed"])
    model = exp.make_model()
    meta = {"model_kwargs": exp.model_kwargs, "config_hash": config_hash}
    with writing(ckpt_dir):
        final = train(model, exp.objective, data, tcfg, ckpt_dir, device=device, model_meta=meta)
    if int(os.environ.get("RANK", "0")) != 0:
        return False
    ema_model(final, model)
    # the EMA weights of every kept checkpoint: FID against training step
    snaps = snapshots(ckpt_dir, model) if exp.cfg.get("snapshots") else None
    with writing(out):
        save_model(out, exp, model, checkpoint=final, snapshots=snaps)
    if curve:  # the loss curve (metrics.csv of the trainer), for plots
        text = (ckpt_dir / "metrics.csv").read_bytes()
        with writing(curve):
            atomic_write(curve, lambda f: f.write(text))
    return True
