"""params.yaml, resolved per job: the defaults of a method entry and of a conditioned task, and
the full config of one (dataset, method) (``resolve``) or one (task, method) (``resolve_task``).

Reading and checking the file (the schema, the checks beyond it, ``load_params``) is
``ddm.validation``'s, which builds on this module.

One declarative config; defaults filled and checked in one place (``resolve``), and the
resolved dict of a job is what the pipeline hands to Snakemake as that job's params, so a
change reruns exactly the jobs whose resolved config changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from ddm import snapshot
from ddm.replicates import check_replicate, replicate_name, replicate_seed, split_replicate
from ddm.yamlio import ConfigError

__all__ = ["ConfigError", "dataset_names", "all_methods", "resolve", "resolved_hash", "model_of", "training_twins",
           "convergence_methods",
           "check_fit",
           "method_path", "METHOD_DEFAULTS", "SAMPLING_KEYS", "REPORT_KEYS", "DATASET_CHANNELS", "TASKS", "TASK_ONLY",
           "TASK_HASH_KEYS", "LATENT_DEFAULTS", "conditioned_block", "task_sampling_batch", "task_names", "task_sets", "resolve_task",
           "inpainting_dataset", "latent_factor", "task_hash"]

#: Defaults of a method entry, per process (the paper's choices; options named in the README).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ddm": {"ht": "main", "clamp_free": None, "weighting": "inverse", "head": "decoder", "loss_type": "l2",
            "reduction": "mean", "recon_weight": 0.0, "t_min": 1e-4, "clip": None, "rho": 2.0, "t_end": 1e-3,
            "final_step": "paper", "denoiser": "network"},
    "vp": {"beta_min": 0.1, "beta_max": 20.0, "x0_branch": False, "head": "conv", "loss_type": "l2",
           "reduction": "mean", "t_min": 1e-5, "clip": None, "rho": 2.0, "t_end": 1e-3,
           "final_step": "paper", "denoiser": "network"},
    "ve": {"sigma_min": 0.01, "sigma_max": 50.0, "head": "decoder", "loss_type": "l2", "reduction": "mean",
           "t_min": 1e-5, "clip": None, "rho": 2.0, "t_end": 1e-5, "final_step": "paper", "denoiser": "network"},
}

#: Method keys that only sampling reads (a change reruns sampling, not training).
SAMPLING_KEYS = frozenset({"sampler", "grid", "t_end", "rho", "clip", "final_step", "denoiser"})
#: Method keys that only the report reads (``ddm.roles``): neither training nor sampling sees them.
REPORT_KEYS = frozenset({"role", "label"})

#: The channel count of each dataset as the pipeline loads it (``ddm.datasets.DatasetSpec.channels``, live).
DATASET_CHANNELS = snapshot.dataset_facts("channels")

#: The conditioned tasks of Tables 2 and 3 (§5.1; ``ddm.tasks``): target channels, condition
#: channels, the metric of Table 2 and whether higher is better.
#: ``datasets``: what a task block's ``dataset`` may name (the paper's data set, §5.1, read by
#: ``ddm.conditioned.dataset_examples``); without it the task runs on its embedded stand-in
#: (``ddm.tasks``; inpainting's is digits). Inpainting's channels are its data set's (condition:
#: the masked image and the mask).
TASKS: dict[str, dict[str, Any]] = {
    "saliency": {"channels": 1, "cond_channels": 3, "metric": "mae", "higher_is_better": False,
                 "datasets": ("duts",)},
    "super_resolution": {"channels": 3, "cond_channels": 3, "metric": "psnr", "higher_is_better": True,
                         "datasets": ("div2k",)},
    "inpainting": {"channels": 1, "cond_channels": 2, "metric": "fid", "higher_is_better": False,
                   "datasets": ("digits", "celebahq256")},
}
#: Defaults of a task block (``conditioned_presets/<preset>/tasks/<task>``) and of its network.
TASK_DEFAULTS = {"n_train": None, "n_test": None}
TASK_ONLY = {"super_resolution": {"scale": 4}, "inpainting": {"paste_known": True}}
COND_MODEL_DEFAULTS = {"encoder": "conv", "encoder_weights": None, "cross_attn_resolutions": None}
#: What a conditioned model's training depends on (``resolved_hash(cfg, TASK_HASH_KEYS)``).
TASK_HASH_KEYS = ("task", "channels", "cond_channels", "resolution", "data", "model", "train", "method")
#: Defaults of a task's ``latent`` block (``ddm.autoencoder.KLAutoencoder`` and its budget): LDM's
#: kl-f4 shape at a small width (§5.1: latent diffusion with down-sampling factor 4).
LATENT_DEFAULTS = {"ch": 32, "ch_mult": [1, 2, 2], "num_blocks": 1, "z_channels": 4, "kl_weight": 1.0e-6,
                   "lr": 2.0e-3, "lr_min": 2.0e-4}


def inpainting_dataset(t: Mapping) -> str:
    """The data set of an inpainting task block (its ``dataset``; digits, the embedded stand-in,
    by default), whose preset block gives inpainting's FID extractor and reference statistics."""
    return t.get("dataset") or "digits"


def method_path(params: Mapping, method: str) -> str:
    """``section/method`` (with the model of a sampling-only variant) for messages."""
    for section in ("methods", "ablation_methods", "solver_methods"):
        if method in params[section]:
            model = f" (model '{params[section][method]['model']}')" if section == "solver_methods" else ""
            return f"{section}/{method}{model}"
    return method


def check_fit(params: Mapping, method: str, cfg: Mapping) -> None:
    """Raise ConfigError if the resolved sampler or grid of ``method`` does not fit its process."""
    m, s = cfg["method"], cfg["sampling"]
    msg = snapshot.fit_error(s["sampler"], s["grid"], m["process"], m.get("ht"), s.get("final_step", "paper"))
    if msg:
        override = params["presets"][params["preset"]][cfg["dataset"]]["method_overrides"].get(method, {})
        note = (f" (with presets/{params['preset']}/{cfg['dataset']}/method_overrides/{method})"
                if set(override) & {"process", "ht", "sampler", "grid"} else "")
        raise ConfigError(f"params.yaml: {method_path(params, method)}{note}: {msg}")


def dataset_names(params: Mapping) -> list[str]:
    return sorted(params["presets"][params["preset"]])


def all_methods(params: Mapping) -> dict[str, dict]:
    return {**params["methods"], **params["ablation_methods"], **params["solver_methods"]}


def model_of(params: Mapping, method: str) -> str:
    """The method whose trained network ``method`` uses: a solver variant's ``model``; a method whose
    training is another's (:func:`training_twins`) that method, and a replicate of it that method's
    replicate (``ht_constant-s1`` -> ``ddm-s1``: the same config, the same seed); else itself."""
    entry = params["solver_methods"].get(method)
    if entry:
        return entry["model"]
    base, k = split_replicate(method)
    owner = training_twins(params).get(base)
    return method if owner is None else replicate_name(owner, k)


_TWINS: dict[str, dict[str, str]] = {}


def training_twins(params: Mapping) -> dict[str, str]:
    """method -> the earlier method it trains the same network as: the same :func:`resolved_hash`
    (data, network, training, method; seed included) on every dataset of the preset. Earlier: Table
    1's methods first, then the ablations, in params.yaml's order. Table 4's ``h_t = c`` row and
    Table 1's DDM with ``ht: constant`` are one network: it is trained once, and both rows sample it
    (each with its own sampling options). Replicates (``ddm-s1``) are never twins: their seeds differ."""
    key = json.dumps(params, sort_keys=True, default=str)
    if key not in _TWINS:
        owners: dict[tuple, str] = {}
        twins = {}
        for method in [*params["methods"], *params["ablation_methods"]]:
            sig = tuple(resolved_hash(_resolve_method(params, ds, method)) for ds in dataset_names(params))
            if sig in owners:
                twins[method] = owners[sig]
            else:
                owners[sig] = method
        _TWINS.clear()  # one params at a time (a Snakefile, a job): no growth
        _TWINS[key] = twins
    return _TWINS[key]


def resolve(params: Mapping, dataset: str, method: str) -> dict:
    """The full config of one (dataset, method): preset block + method entry + defaults.

    Keys: dataset, channels, resolution, model, train, method (what training reads, with
    ``ht`` resolved) and sampling (sampler, grid and its options, clip: what sampling reads).
    """
    preset = params["presets"][params["preset"]]
    if dataset not in preset:
        raise ConfigError(f"dataset '{dataset}' is not in preset '{params['preset']}' (allowed: {', '.join(sorted(preset))})")
    if split_replicate(method)[1]:  # a training-seed replicate (ddm.replicates): the method, its own seed
        cfg = resolve(params, dataset, check_replicate(params, method))
        cfg["train"]["seed"] = replicate_seed(params["seed"], split_replicate(method)[1])
        return cfg
    methods = all_methods(params)
    if method not in methods:
        raise ConfigError(f"unknown method '{method}' (allowed: {', '.join(sorted(methods))})")
    if method in params["solver_methods"]:
        variant = params["solver_methods"][method]
        cfg = resolve(params, dataset, variant["model"])
        cfg["sampling"].update({k: v for k, v in variant.items() if k in SAMPLING_KEYS})
        check_fit(params, method, cfg)
        return cfg
    cfg = _resolve_method(params, dataset, method)
    # keep the EMA weights of every checkpoint in the model file (the convergence figure), also for a
    # twin's convergence record (it reads this network: model_of)
    cfg["snapshots"] = any(m == method or model_of(params, m) == method for m in convergence_methods(params, dataset))
    check_fit(params, method, cfg)
    return cfg


def convergence_methods(params: Mapping, dataset: str) -> list[str]:
    """The networks of ``dataset`` with a convergence record (FID against training step, from every
    kept checkpoint: the plateau check's input, ddm.plateau): the preset's ``convergence: methods``
    and, with ``convergence: {ablations: true}`` and ``ablations`` on, every ablation network
    (Tables 4-5, Fig. 3) that trains its own network (a twin's is its owner's, :func:`training_twins`)."""
    conv = params["presets"][params["preset"]][dataset].get("convergence") or {}
    out = list(conv.get("methods", []))
    if conv.get("ablations") and params.get("ablations"):
        out += [m for m in params["ablation_methods"] if m not in out and model_of(params, m) == m]
    return out


def _resolve_method(params: Mapping, dataset: str, method: str) -> dict:
    """:func:`resolve` of a Table 1 or ablation method, before its ``snapshots`` flag and fit check."""
    block = params["presets"][params["preset"]][dataset]
    return {
        "dataset": dataset,
        "channels": DATASET_CHANNELS[dataset],
        "resolution": block["resolution"],
        "model": copy.deepcopy(block["model"]),
        "train": {**copy.deepcopy(block["train"]), "seed": params["seed"]},
        **_method_parts(params, all_methods(params)[method], block["method_overrides"].get(method, {})),
    }


def _method_parts(params: Mapping, entry: Mapping, override: Mapping) -> dict:
    """``method`` (what training reads, ``ht: main`` resolved) and ``sampling`` of a method
    entry with its process' defaults and an override."""
    m = copy.deepcopy(METHOD_DEFAULTS[entry["process"]])
    m.update(entry)
    m.update(override)
    if m["process"] == "ddm" and m["ht"] == "main":
        m["ht"] = params["ht"]
    return {"method": {k: v for k, v in m.items() if k not in SAMPLING_KEYS | REPORT_KEYS},
            "sampling": {k: v for k, v in m.items() if k in SAMPLING_KEYS}}


# -- conditioned generation (Tables 2 and 3) -------------------------------------------------------
def conditioned_block(params: Mapping) -> dict | None:
    """The active preset's entry of ``conditioned_presets`` (tasks, network, budget, NFEs), or None
    when ``conditioned`` is off. Kept outside ``presets`` because every reader of a preset takes
    its keys for dataset names."""
    if not params.get("conditioned"):
        return None
    return params.get("conditioned_presets", {}).get(params["preset"])


#: The sampling batch of ``ddm sample-task`` where the conditioned preset names none.
TASK_SAMPLING_BATCH = 256


def task_sampling_batch(params: Mapping) -> int:
    """The images a ``sample-task`` job denoises at once: the conditioned preset's ``batch_size``,
    else :data:`TASK_SAMPLING_BATCH`. Each sample has its own seed (``ddm.modelfile.sample_seeds``),
    so the batch changes the memory a job needs and not its samples (beyond float rounding)."""
    block = conditioned_block(params) or {}
    return int(block.get("batch_size", TASK_SAMPLING_BATCH))


def task_names(params: Mapping) -> list[str]:
    """The conditioned tasks that run (in the order of :data:`TASKS`); none when switched off."""
    block = conditioned_block(params)
    return [t for t in TASKS if t in block["tasks"]] if block else []


def task_sets(block: Mapping) -> list[tuple[int, int]]:
    """(NFE, repeat) of every sample set of each (task, method): Table 2's NFEs with its repeats,
    Table 3's with its own; an NFE in both gets the larger count."""
    sets = {(n, r) for table in ("table2", "table3") for n in block[table]["nfe"]
            for r in range(block[table]["repeats"])}
    return sorted(sets)


def resolve_task(params: Mapping, task: str, method: str) -> dict:
    """The full config of one (task, method) of ``conditioned_methods``: keys task, channels,
    cond_channels, resolution, metric, metrics (the extra ones, ``ddm.task_metrics``), data (what ``ddm.tasks`` draws: size, n_train, n_test,
    seed, and scale for super-resolution), model (UNet keys + condition encoder keys), train,
    method and sampling (as :func:`resolve`; inpainting adds ``paste_known``)."""
    block = conditioned_block(params)
    if block is None:
        raise ConfigError(f"params.yaml: conditioned is off or conditioned_presets has no '{params['preset']}' "
                          "entry: set conditioned: true and describe the preset's tasks")
    if task not in block["tasks"]:
        raise ConfigError(f"unknown task '{task}' (allowed: {', '.join(task_names(params))})")
    methods = params.get("conditioned_methods", {})
    if method not in methods:
        raise ConfigError(f"unknown conditioned method '{method}' (allowed: {', '.join(sorted(methods))})")
    t = block["tasks"][task]
    if t.get("dataset") and t["dataset"] not in TASKS[task]["datasets"]:
        raise ConfigError(f"params.yaml: conditioned_presets/{params['preset']}/tasks/{task}/dataset: "
                          f"'{t['dataset']}' is not a data set of this task (allowed: {', '.join(TASKS[task]['datasets'])})")
    data = {**TASK_DEFAULTS, **TASK_ONLY.get(task, {}),
            **{k: v for k, v in t.items() if k not in ("model", "train", "latent", "metrics")}}
    parts = _method_parts(params, methods[method], {})
    if "paste_known" in data:
        parts["sampling"]["paste_known"] = data.pop("paste_known")
    cfg = {
        "task": task, **{k: TASKS[task][k] for k in ("channels", "cond_channels", "metric")},
        "metrics": list(t.get("metrics", [])),  # extra metrics (ddm.task_metrics): scoring only, no hash
        **({"channels": DATASET_CHANNELS[t["dataset"]], "cond_channels": DATASET_CHANNELS[t["dataset"]] + 1}
           if task == "inpainting" and t.get("dataset") else {}),
        "resolution": t["size"], "data": {**data, "seed": params["seed"]},
        "model": {**COND_MODEL_DEFAULTS, **copy.deepcopy(block["model"]), **copy.deepcopy(t.get("model", {}))},
        "train": {**copy.deepcopy(block["train"]), **copy.deepcopy(t.get("train", {})), "seed": params["seed"]},
        **parts,
    }
    if t.get("latent") is not None:
        _latent_space(cfg, {**LATENT_DEFAULTS, **copy.deepcopy(t["latent"])})
    m, s = cfg["method"], cfg["sampling"]
    msg = snapshot.fit_error(s["sampler"], s["grid"], m["process"], m.get("ht"), s.get("final_step", "paper"))
    if msg:
        raise ConfigError(f"params.yaml: conditioned_methods/{method}: {msg}")
    return cfg


def latent_factor(latent: Mapping) -> int:
    """The down-sampling factor of a ``latent`` block's autoencoder: 2**(len(ch_mult)-1) (§5.1)."""
    return 2 ** (len(latent["ch_mult"]) - 1)


def _latent_space(cfg: dict, latent: dict) -> None:
    """Move a resolved task config into the latent space of its autoencoder (§5.1, latent diffusion):
    the network's x0 is the scaled latent (z_channels channels, size / f pixels; the condition stays
    in pixel space, ``cond_resolution``), and the sampler does not clip x0 (``clip: null``: latents
    are unit-scale, not bounded by [-1, 1])."""
    cfg.update(channels=latent["z_channels"], resolution=cfg["resolution"] // latent_factor(latent),
               cond_resolution=cfg["resolution"], latent=latent)
    cfg["sampling"]["clip"] = None


def task_hash(cfg: Mapping) -> str:
    """:func:`resolved_hash` of a resolved (task, method) (``TASK_HASH_KEYS``, and ``latent`` for a
    latent task, §5.1): what its training depends on."""
    return resolved_hash(cfg, TASK_HASH_KEYS + (("latent",) if "latent" in cfg else ()))


def resolved_hash(cfg: Mapping, keys: tuple[str, ...] = ("dataset", "channels", "resolution", "model", "train", "method")) -> str:
    """A short content hash of the training-relevant part of a resolved config."""
    blob = json.dumps({k: cfg[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
