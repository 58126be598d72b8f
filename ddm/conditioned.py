"""Conditioned generation in the pipeline: Tables 2 and 3 of the paper (§5.1, §5.3; Fig. 5, §B.2).

The steps ``ddm prepare-task``, ``train-task``, ``sample-task`` and ``evaluate-task`` (rules of
workflow/rules/tasks.smk) are thin adapters over these functions:

* :func:`make_split` draws a task's split from ``ddm.tasks`` (the embedded stand-ins for DUTS,
  DIV2K and CelebA-HQ) or from the paper's data set (:func:`dataset_examples`) as a task file
  (:data:`TASK_FORMAT`): the uint8 fields the metric and the references read (both splits, the
  data set fetched first: :func:`task_splits`); :func:`load_split`
  adds ``target`` and ``cond`` in the model range (a quarter of the file size at paper scale).
* :func:`build_task` makes the experiment of a resolved (task, method) (``ddm.config.resolve_task``):
  the method's process and objective (DDM's Eq. 10 with x0 = the task's target, or the VP/DDPM
  baseline's Eq. 4) wrapped in :class:`ddm.conditioning.ConditionedObjective`, and a
  :class:`ddm.conditioning.CondUNet` of the same backbone for every method. Its model files are
  those of ``ddm train`` (``ddm.modelfile``), read back by :func:`load_task_model`.
* :func:`ddm.generate.sample_split` draws one sample per test condition with per-sample seeds
  (``ddm.modelfile.sample_seeds``): every method sees the same conditions, masks and noise seeds.
* :func:`task_metric` is Table 2's metric of a sample set (saliency MAE, super-resolution PSNR on Y
  with the scale as crop border, inpainting FID with the digits classifier against the digits'
  reference statistics); :func:`task_references` gives the trivial references (all-background
  MAE, bicubic PSNR, FID of the mean-colour fill, and FID of the real test images);
  :func:`set_records` and :func:`reference_record` are the metric files of ``ddm evaluate-task``,
  scored by FID through :func:`task_fid` where the task's metric is FID.

Reading choices (options, named where they are set):

* Train and test splits draw their examples from different seeds (:func:`split_seed`), so no test
  mask, crop or layout repeats a training one (``ddm.tasks`` seeds examples by (seed, index)).
* ``paste_known`` (inpainting, default true): the known pixels of the input are pasted over the
  sample before it is scored, as LaMa's evaluation (Suvorov et al., 2022) composes its outputs.
* Saliency maps are scored as 8-bit images, (x + 1) / 2 rounded to uint8, as saliency maps are
  saved and read for DUTS' MAE.

Latent tasks (§5.1: "we translate the diffusion process into latent space for high-resolution
(>256) image synthesis", a KL autoencoder of factor 4): a task with a ``latent`` block
(``ddm.config.resolve_task``) trains its network on the scaled latents of its targets
(:func:`training_data`, the autoencoder of ``ddm train-autoencoder``, read back and checked by
:func:`task_autoencoder`), the condition stays in
pixel space (``CondUNet(cond_resolution=...)``), and :func:`ddm.generate.sample_split` decodes the sampled
latents, so samples, metrics and figures are pixel images as for every other task. DDM and the
DDPM baseline go through the same autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ddm.conditioning import ConditionedObjective, build_cond_unet, pack
from ddm.config import TASKS
from ddm.experiment import Experiment, build
from ddm.io import InputError, load_torch, utc_timestamp
from ddm.tasks import MODEL_FIELDS, model_tensors

__all__ = ["TASK_FORMAT", "SPLITS", "INPAINTING_SPLIT_SEED", "TaskExperiment", "split_seed", "make_split", "task_splits",
           "dataset_examples", "load_split", "build_task", "load_task_model", "PackedSplit", "training_data",
           "task_autoencoder", "task_metric", "task_references", "task_fid", "set_records", "reference_record"]

#: The ``format`` entry of a task file (``ddm prepare-task``).
TASK_FORMAT = "ddm.task/2"  # 2: uint8 fields only; target and cond are made on reading
SPLITS = ("train", "test")
#: The fields a task file holds per task (besides format, task, split, data).
_FIELDS = {"saliency": ("image_uint8", "mask_uint8"),
           "super_resolution": ("hr_uint8", "lr_uint8", "cond_uint8", "scale"),
           "inpainting": ("image_uint8", "mask", "mean")}


def split_seed(seed: int, split: str) -> int:
    """The seed of a split's examples: 2 seed for train, 2 seed + 1 for test (disjoint draws; a
    reading choice: the paper's datasets come with fixed splits, §5.1)."""
    return 2 * int(seed) + (split == "test")


def make_split(task: str, split: str, data: Mapping, root=None) -> dict:
    """One split of a task of §5.1 as the dict a task file holds: ``data`` is the resolved task
    block (``resolve_task(...)["data"]``: size, n_train, n_test, seed, scale, and ``dataset`` when
    the task reads the paper's data set, :func:`dataset_examples`, from the data folder ``root``;
    without it, the embedded stand-ins of ``ddm.tasks`` for DUTS, DIV2K and CelebA-HQ)."""
    from ddm import tasks

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n, seed = data["n_train" if split == "train" else "n_test"], split_seed(data["seed"], split)
    if data.get("dataset"):
        d = dataset_examples(task, split, data, root)
    elif task == "saliency":
        d = tasks.saliency_task(split, n=n, size=data["size"], seed=seed)
    elif task == "super_resolution":
        d = tasks.sr_task(split, n=n, size=data["size"], scale=data["scale"], seed=seed)
    elif task == "inpainting":
        d = tasks.inpainting_task(split, n=n, size=data["size"], seed=seed)
    else:
        raise ValueError(f"unknown task {task!r} (allowed: {', '.join(TASKS)})")
    stored = {k: v for k, v in d.items() if k not in ("target", "cond")}  # load_split makes them again
    return {"format": TASK_FORMAT, "task": task, "split": split, "data": dict(data), **stored}


def task_splits(task: str, data: Mapping, root=None) -> Iterator[tuple[str, dict]]:
    """Both splits of a task (``ddm prepare-task``), one at a time: ``(split, what a task file
    holds)`` of :func:`make_split` for train, then test. A task that reads the paper's data set
    (§5.1; ``dataset`` in ``data``) fetches it into the data folder ``root`` first (or unpacks it
    from the block's ``source``) where it has resources."""
    dataset = data.get("dataset")
    if dataset:  # the paper's data set (§5.1): fetched (or unpacked from `source`) once, then read
        from ddm.datasets import DATASETS, download_dataset

        if DATASETS[dataset].resources:
            download_dataset(dataset, root, source=data.get("source"))
    for split in SPLITS:
        yield split, make_split(task, split, data, root=root)


#: The seed of the fixed permutation that splits CelebA-HQ's images into inpainting's train and test
#: sets (a reading choice: the paper follows Suvorov et al.'s 26,000 / 2,000 split, whose file lists
#: it does not give); fixed, so that params.yaml's seed does not move images between the splits.
INPAINTING_SPLIT_SEED = 0


def dataset_examples(task: str, split: str, data: Mapping, root=None) -> dict:
    """A split of a task from the paper's data set (``ddm.datasets``; §5.1): super-resolution on DIV2K
    (a ``size`` centre crop of each HR image at native scale; train = DIV2K_train_HR, test =
    DIV2K_valid_HR), saliency on DUTS (images and masks resized to ``size``; DUTS-TR / DUTS-TE),
    inpainting on CelebA-HQ (all images at ``size``, split by a fixed permutation into the first
    ``n_train`` and the next ``n_test``) or digits. ``n_train`` / ``n_test`` limit the examples
    (null: all). The examples are those of ``ddm.tasks``' ``*_examples`` functions."""
    from ddm import tasks
    from ddm.datasets import load_dataset

    name, size = data["dataset"], data["size"]
    if name not in TASKS[task]["datasets"]:
        raise ValueError(f"the {task} task does not read dataset {name!r} (allowed: "
                         f"{', '.join(TASKS[task]['datasets'])})")
    n = data["n_train" if split == "train" else "n_test"]
    if task == "super_resolution":
        return tasks.sr_examples(load_dataset(name, root, split, resolution=size, limit=n), data["scale"])
    if task == "saliency":
        return tasks.saliency_examples(*load_dataset(name, root, split, resolution=size, limit=n))
    if name == "digits":  # the embedded stand-in: digits' own train / test split
        return tasks.inpainting_task(split, n=n, size=size, seed=split_seed(data["seed"], split))
    images = load_dataset(name, root, "train", resolution=size)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(INPAINTING_SPLIT_SEED))
    n_train = data["n_train"] if data["n_train"] is not None else len(images) - (data["n_test"] or 0)
    parts = {"train": order[:n_train], "test": order[n_train:n_train + (data["n_test"] or len(images))]}
    if len(parts["test"]) < 2:
        raise ValueError(f"{name} has {len(images)} images: n_train {n_train} leaves {len(parts['test'])} "
                         "for the test split; lower n_train")
    x, train = images[parts[split]], images[parts["train"]]
    return tasks.inpainting_examples(x, split_seed(data["seed"], split), train.to(torch.float64).mean(dim=(0, 2, 3)))


def load_split(path, task: str, split: str, data: Mapping | None = None, *, tensors: bool = True) -> dict:
    """A task file of ``ddm prepare-task``, checked: its format, task, split, fields and (if given)
    the task block it was drawn with; an ``InputError`` naming the file otherwise. With ``tensors``
    also ``target`` and ``cond`` in the model range (``ddm.tasks.model_tensors``, float32: four
    times the file's uint8 fields); training reads them per batch instead (:class:`PackedSplit`)."""
    blob = load_torch(path, "task file", "ddm prepare-task")
    fields = _FIELDS.get(task, ())
    if not isinstance(blob, dict) or blob.get("format") != TASK_FORMAT or any(k not in blob for k in fields):
        raise InputError(f"task file {path} is not a {task} split written by `ddm prepare-task` ({TASK_FORMAT})")
    if (blob["task"], blob["split"]) != (task, split):
        raise InputError(f"task file {path} holds the {blob['split']} split of {blob['task']}; expected the "
                         f"{split} split of {task}")
    if data is not None and blob["data"] != dict(data):
        raise InputError(f"task file {path} was drawn with {blob['data']}, params.yaml now gives {dict(data)}: "
                         "write it again with `ddm prepare-task` (snakemake does so by itself)")
    return {**blob, **model_tensors(task, blob)} if tensors else blob


@dataclass
class TaskExperiment(Experiment):
    """An :class:`ddm.experiment.Experiment` whose network is a :class:`CondUNet`
    (``model_kwargs``: the UNet keys plus cond_channels and the encoder keys) and whose objective
    reads the condition from the packed data (``ddm.conditioning.pack``)."""

    def make_model(self) -> nn.Module:
        return build_cond_unet(self.model_kwargs)


def build_task(cfg: Mapping) -> TaskExperiment:
    """The experiment of a resolved (task, method) (``ddm.config.resolve_task``): the method's
    process and objective (§5.1: x0 is the task's target), the same CondUNet backbone for every
    method (Table 2's DDPM rows differ from DDM's only in process and objective)."""
    exp = build(cfg)
    model = cfg["model"]
    kwargs = {**exp.model_kwargs, "cond_channels": cfg["cond_channels"], "encoder": model["encoder"],
              "encoder_weights": model["encoder_weights"], "cross_attn_resolutions": model["cross_attn_resolutions"]}
    if model.get("conditioning"):  # absent: CondUNet's default (cross-attention, §5.1), and the config hash of before
        kwargs["conditioning"] = model["conditioning"]
    factor = 1
    if "latent" in cfg:  # §5.1: x0 is a latent, the condition stays in pixel space
        kwargs["cond_resolution"] = cfg["cond_resolution"]
        factor = cfg["cond_resolution"] // cfg["resolution"]
    objective = ConditionedObjective(exp.objective, cfg["channels"], factor)
    return TaskExperiment(exp.cfg, exp.process, objective, kwargs)


def load_task_model(path, device="cpu") -> tuple[TaskExperiment, nn.Module]:
    """(TaskExperiment, EMA network in eval mode) of a model file of ``ddm train-task`` (the EMA
    weights, §B.3)."""
    from ddm.modelfile import read_model

    blob = read_model(path)
    if "task" not in blob["cfg"]:
        raise InputError(f"model file {path} is not a conditioned model (it was written by `ddm train`, "
                         "not `ddm train-task`)")
    try:
        exp = build_task(blob["cfg"])
        net = build_cond_unet(blob["model_kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise InputError(f"model file {path}: its config and weights do not make a conditioned model "
                         f"({type(e).__name__}: {first}): train it again with `ddm train-task`") from None
    return exp, net.to(device).eval()


class PackedSplit:
    """The packed training data of a task (``ddm.conditioning.pack``: target, then condition) made
    per batch from a split's uint8 fields: ``data[idx]`` equals the packed float tensor's rows
    ``idx`` exactly, while memory holds the uint8 fields (a quarter of float32; CelebA-HQ inpainting
    at 256²: about 7 GB instead of 48 GB) and, for a latent task, the latents ``z``. What
    ``ddm.training.Trainer`` reads of its data: ``shape``, ``dtype``, ``device`` and ``[idx]``."""

    def __init__(self, task: str, split: Mapping, z: Tensor | None = None, factor: int = 1):
        self.task, self.z, self.factor = task, z, factor
        self.fields = {k: split[k] for k in MODEL_FIELDS[task]}
        first = self[torch.zeros(1, dtype=torch.long)]
        self.shape = torch.Size([len(self.fields[MODEL_FIELDS[task][0]]), *first.shape[1:]])
        self.dtype, self.device = first.dtype, first.device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Tensor) -> Tensor:
        m = model_tensors(self.task, {k: v[idx] for k, v in self.fields.items()})
        return pack(m["target"] if self.z is None else self.z[idx], m["cond"], self.factor)


def training_data(cfg: Mapping, split: Mapping, autoencoder: nn.Module | None = None) -> PackedSplit:
    """The packed training data of a resolved (task, method) (:class:`PackedSplit`, made per batch
    from the uint8 fields of ``load_split(..., tensors=False)``): target and condition; for a latent
    task (§5.1) the target is the autoencoder's scaled latent of the target and the condition,
    still in pixel space, travels space-to-depth."""
    if "latent" not in cfg:
        return PackedSplit(cfg["task"], split)
    if autoencoder is None:
        raise InputError(f"the {cfg['task']} task runs in latent space (its latent block in params.yaml): "
                         "pass its autoencoder (--autoencoder, written by `ddm train-autoencoder`)")
    from ddm.autoencoder import encode_images

    task, step = cfg["task"], 256  # encode_images' own batches: the same latents as one call
    rows = [{k: split[k][i:i + step] for k in MODEL_FIELDS[task]}
            for i in range(0, len(split[MODEL_FIELDS[task][0]]), step)]
    z = torch.cat([encode_images(autoencoder, model_tensors(task, r)["target"], step) for r in rows])
    return PackedSplit(task, split, z, cfg["cond_resolution"] // cfg["resolution"])


def task_autoencoder(cfg: Mapping, path, device="cpu") -> nn.Module | None:
    """The autoencoder of a latent task (§5.1) from its file ``path`` (``ddm train-autoencoder``),
    checked to be the one of ``cfg``'s task, latent block and data, on ``device``; None for a
    pixel task (``cfg``: ``ddm.config.resolve_task``'s)."""
    if "latent" not in cfg:
        return None
    if not path:
        raise InputError(f"the {cfg['task']} task runs in latent space (its latent block in params.yaml): pass "
                         "--autoencoder (results/models/autoencoder/<task>.pt of `ddm train-autoencoder`)")
    from ddm.autoencoder import load_autoencoder

    made, ae = load_autoencoder(path, device)
    if (made.get("task"), made.get("latent"), made.get("data")) != (cfg["task"], cfg["latent"], cfg["data"]):
        raise InputError(f"autoencoder file {path} was trained for another task or latent block than "
                         f"params.yaml gives for {cfg['task']}: train it again with `ddm train-autoencoder`")
    return ae


def task_metric(task: str, samples: Tensor, split: Mapping, fid: Callable[[Tensor], dict] | None = None) -> float:
    """Table 2's metric of uint8 samples of the test split: saliency MAE against the object masks,
    super-resolution PSNR (Y channel, ``scale`` pixels cropped at each border), inpainting FID
    (``fid``: uint8 images -> ``ddm.metrics.fid``'s dict)."""
    from ddm.metrics import mae, psnr

    if tuple(samples.shape) != tuple(split["target"].shape):
        raise InputError(f"samples of shape {tuple(samples.shape)} do not match the {task} test split "
                         f"{tuple(split['target'].shape)}")
    if task == "saliency":
        return mae(samples, split["mask_uint8"])
    if task == "super_resolution":
        return psnr(samples, split["hr_uint8"], crop_border=int(split["scale"]))
    return float(fid(samples)["fid"])


def task_references(task: str, split: Mapping, fid: Callable[[Tensor], dict] | None = None) -> dict[str, float]:
    """The trivial references of Table 2 on the test split: saliency ``all_background`` (MAE of an
    empty mask), super-resolution ``bicubic`` (PSNR of bicubic up-sampling), inpainting
    ``mean_fill`` (FID of the holes filled with the training mean) and ``test_images`` (FID of the
    complete test images: what a perfect inpainting scores against the training statistics)."""
    from ddm import tasks

    if task == "saliency":
        return {"all_background": tasks.all_background_mae(split["mask_uint8"])}
    if task == "super_resolution":
        return {"bicubic": tasks.bicubic_psnr(split)}
    filled = tasks.mean_fill(split["image_uint8"], split["mask"], split["mean"])
    return {"mean_fill": float(fid(filled)["fid"]), "test_images": float(fid(split["image_uint8"])["fid"])}


def task_fid(cfg: Mapping, reference, extractor) -> Callable[[Tensor], dict] | None:
    """For a task scored by FID (inpainting): uint8 images -> ``ddm.metrics.fid``'s dict against
    the reference statistics file ``reference`` with the extractor file ``extractor`` (``ddm
    refstats``, ``ddm extractor``: both checked here); None for a task of another metric."""
    if cfg["metric"] != "fid":
        return None
    if not (reference and extractor):
        ds = cfg["data"].get("dataset") or "digits"
        raise InputError(f"task {cfg['task']} is scored by FID: pass --reference and --extractor (its data set's "
                         f"results/fid/{ds}/reference.npz and extractor.json)")
    from ddm.contracts import check_reference, load_json_product
    from ddm.metrics import fid

    ex = load_json_product(extractor, "extractor")
    check_reference(reference)
    return lambda u8: fid(u8, reference, ex["extractor"], ex["weights"])


def _record(cfg: Mapping, split: Mapping) -> dict:
    return {"task": cfg["task"], "metric": cfg["metric"], "num_samples": len(split["target"])}


def set_records(cfg: Mapping, split: Mapping, samples: Mapping, fid: Callable[[Tensor], dict] | None = None,
                ) -> Iterator[tuple[tuple[str, tuple[int, int]], dict]]:
    """The metric files of ``ddm evaluate-task``, one sample set at a time: for each ``(method,
    (nfe, repeat))`` of ``samples`` (-> uint8 samples of the test ``split``), that key and its
    record: Table 2's metric (:func:`task_metric`) as ``value``, each extra metric the task names
    (``cfg["metrics"]``, ``ddm.task_metrics``) in ``extra``, with the task, metric, sample count,
    method, NFE, repeat and ``computed_at``."""
    from ddm.task_metrics import TASK_METRICS

    for (method, (nfe, repeat)), x in samples.items():
        value = task_metric(cfg["task"], x, split, fid)
        extra = {name: float(TASK_METRICS.lookup(name)(x, split)) for name in cfg.get("metrics", [])}
        yield (method, (nfe, repeat)), {**_record(cfg, split), "method": method, "nfe": nfe, "repeat": repeat,
                                        "value": value, **({"extra": extra} if extra else {}),
                                        "computed_at": utc_timestamp()}


def reference_record(cfg: Mapping, split: Mapping, fid: Callable[[Tensor], dict] | None = None) -> dict:
    """A task's reference.json (``ddm evaluate-task``): the trivial references of Table 2 on the
    test ``split`` (:func:`task_references`), with the task, metric, sample count and
    ``computed_at``."""
    return {**_record(cfg, split), "references": task_references(cfg["task"], split, fid),
            "computed_at": utc_timestamp()}
