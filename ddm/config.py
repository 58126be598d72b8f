"""params.yaml: load, validate against the package's schema (ddm/data/params.schema.yaml), resolve per job.

The schema's lists of names (h_t families, samplers, grids, final steps, weightings, processes)
are filled from the registries when it is read (``schema``, ``ddm.registry.schema_enums``, read
through ``ddm.snapshot``: no torch import), so a
family or sampler registered anywhere validates; the lists on disk document the package's own
names, and tests/test_config.py fails when they differ from the registries.

One declarative config; defaults filled and checked in one place (``resolve``), and the
resolved dict of a job is what the pipeline hands to Snakemake as that job's params, so a
change reruns exactly the jobs whose resolved config changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from ddm import plugins, snapshot
from ddm.limits import size_errors
from ddm.replicates import check_replicate, replicate_seed, split_replicate
from ddm.yamlio import PREFIX, ConfigError, ConfigLayer, name_source, nonfinite_lines, read_yaml, read_yaml_lines
from ddm.resources import SCHEMA_PATH
from ddm.shards import shard_size_error

__all__ = ["ConfigError", "ConfigLayer", "read_yaml", "read_yaml_lines", "load_params", "validate", "name_source", "schema",
           "dataset_names", "all_methods", "resolve", "resolved_hash", "model_of", "check_fit", "SCHEMA_PATH", "SCHEMA_ENUMS",
           "METHOD_DEFAULTS", "REPORT_KEYS", "TASKS", "TASK_HASH_KEYS", "LATENT_DEFAULTS", "conditioned_block",
           "task_names", "task_sets", "resolve_task", "inpainting_dataset", "latent_factor", "task_hash"]

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

#: Registry name (``ddm.registry.schema_enums``) -> the schema node whose ``enum`` lists its names.
SCHEMA_ENUMS: dict[str, tuple[str, ...]] = {
    "family": ("definitions", "family"),
    "ht": ("definitions", "method", "properties", "ht"),
    "process": ("definitions", "method", "properties", "process"),
    "weighting": ("definitions", "method", "properties", "weighting"),
    "sampler": ("definitions", "method", "properties", "sampler"),
    "grid": ("definitions", "method", "properties", "grid"),
    "final_step": ("definitions", "method", "properties", "final_step"),
    "dataset": ("properties", "presets", "additionalProperties", "propertyNames"),
    "extractor": ("definitions", "dataset", "properties", "fid", "properties", "extractor"),
}

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


def schema() -> dict:
    """The params.yaml schema, read from the package (``ddm.resources.SCHEMA_PATH``), with the
    enums of :data:`SCHEMA_ENUMS` set to the names registered now."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        out = yaml.safe_load(f)
    for name, values in snapshot.load()["enums"].items():
        node = out
        for key in SCHEMA_ENUMS[name]:
            node = node[key]
        node["enum"] = list(values)
    return out


def validate(params: Mapping, source: str | Path = "params.yaml", layers: tuple[ConfigLayer, ...] = ()) -> None:
    """Validate against the schema and the checks beyond it (finite numbers, sampler fit, NFE and
    sample counts that fit in memory, ...); errors name the path, the value and the allowed values,
    and the file: ``source`` (params.yaml or the ``--params`` file), or with ``layers`` (Snakemake's
    ``--configfile`` / ``--config`` over params.yaml) the layer that set the value, with its line."""
    try:
        nonfinite = nonfinite_lines(params)
        if nonfinite:
            raise ConfigError("\n".join(nonfinite))
        _validate(params)
        sizes = size_errors(params, conditioned_block(params), DATASET_CHANNELS, {t: v["channels"] for t, v in TASKS.items()})
        if sizes:
            raise ConfigError("\n".join(f"{PREFIX}{line}" for line in sizes))
    except ConfigError as e:
        raise ConfigError(name_source(str(e), source, layers)) from None


def _is_integer(checker, value) -> bool:
    """JSON Schema's integer without the floats it admits (1e30 is not a step count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(params: Mapping) -> None:
    """The schema and the checks beyond it; each message starts with :data:`PREFIX`."""
    import jsonschema

    schema_ = schema()
    cls = jsonschema.validators.validator_for(schema_)
    cls = jsonschema.validators.extend(cls, type_checker=cls.TYPE_CHECKER.redefine("integer", _is_integer))
    validator = cls(schema_)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines, seen = [], set()
        for e in errors:
            path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            if path in seen and path != "(top level)":
                continue  # one error per value (1e30 steps: not an integer, and not also above the maximum)
            seen.add(path)
            allowed = ""
            if "enum" in e.schema:
                allowed = f" (allowed: {', '.join(map(str, e.schema['enum']))})"
            elif e.validator == "additionalProperties" and "properties" in e.schema:
                allowed = f" (allowed: {', '.join(sorted(e.schema['properties']))})"
            lines.append(f"params.yaml: {path}: {e.message}{allowed}")
        raise ConfigError("\n".join(lines))
    if params["preset"] not in params["presets"]:
        raise ConfigError(f"params.yaml: preset: '{params['preset']}' is not defined "
                          f"(allowed: {', '.join(sorted(params['presets']))})")
    sections = ("methods", "ablation_methods", "solver_methods")
    for i, a in enumerate(sections):
        for b in sections[i + 1 :]:
            clash = set(params[a]) & set(params[b])
            if clash:
                raise ConfigError(f"params.yaml: {a} and {b} both define {sorted(clash)}")
    trained = {**params["methods"], **params["ablation_methods"]}
    for name, entry in params["solver_methods"].items():
        if entry["model"] not in trained:
            raise ConfigError(f"params.yaml: solver_methods/{name}/model: '{entry['model']}' is not a trained method "
                              f"(allowed: {', '.join(sorted(trained))})")
    method_keys = set(schema_["definitions"]["method"]["properties"])
    method_validator = validator.evolve(schema={**schema_["definitions"]["method"], "definitions": schema_["definitions"]})
    for ds, block in params["presets"][params["preset"]].items():
        where = f"presets/{params['preset']}/{ds}/method_overrides"
        unknown = set(block["method_overrides"]) - set(trained)
        if unknown:
            raise ConfigError(f"params.yaml: {where} names unknown methods {sorted(unknown)} "
                              f"(allowed: {', '.join(sorted(trained))})")
        for name, override in block["method_overrides"].items():
            bad = set(override) - method_keys
            if bad:
                raise ConfigError(f"params.yaml: {where}/{name}: unknown keys {sorted(bad)} "
                                  f"(allowed: {', '.join(sorted(method_keys))})")
            merged = {**trained[name], **override}
            errors = list(method_validator.iter_errors(merged))
            if errors:
                raise ConfigError(f"params.yaml: {where}/{name}: {errors[0].message}")
        _validate_convergence(params, ds, block, trained)
        why = block.get("shard_size") is not None and shard_size_error(block["shard_size"])
        if why:
            raise ConfigError(f"params.yaml: presets/{params['preset']}/{ds}/shard_size: {why}")
    _validate_fit(params)
    _validate_denoisers(params, trained)
    _validate_conditioned(params, validator, schema_)


def _validate_conditioned(params: Mapping, validator, schema_: Mapping) -> None:
    """``conditioned: true`` needs ``conditioned_methods`` and the active preset's entry of
    ``conditioned_presets``; each task's network and budget (the preset's, with the task's own
    keys) validate as the schema says and fit the task's size; every (task, method) resolves."""
    if not params.get("conditioned"):
        return
    if not params.get("conditioned_methods"):
        raise ConfigError("params.yaml: conditioned: true needs conditioned_methods (the rows of Tables 2 and 3, "
                          "e.g. ddm and ddpm); or set conditioned: false")
    block = conditioned_block(params)
    if block is None:
        known = ", ".join(sorted(params.get("conditioned_presets", {}))) or "none"
        raise ConfigError(f"params.yaml: conditioned: true needs conditioned_presets/{params['preset']} (the preset's "
                          f"tasks, network and budget; described for: {known}); or set conditioned: false")
    where = f"params.yaml: conditioned_presets/{params['preset']}/tasks"
    defs = schema_["definitions"]
    for task, t in block["tasks"].items():
        for key, sub in (("model", defs["cond_model"]), ("train", defs["dataset"]["properties"]["train"])):
            errors = list(validator.evolve(schema={**sub, "definitions": defs}).iter_errors({**block[key], **t.get(key, {})}))
            if errors:
                at = "".join(f"/{p}" for p in errors[0].absolute_path)
                raise ConfigError(f"{where}/{task}/{key}{at}: {errors[0].message} (the preset's {key} with the task's own keys)")
        misplaced = sorted({"scale", "paste_known"} & set(t) - set(TASK_ONLY.get(task, {})))
        if misplaced:
            raise ConfigError(f"{where}/{task}: {misplaced} belong to another task (scale: super_resolution, "
                              "paste_known: inpainting); remove them")
        if not t.get("dataset") and task != "inpainting" and any(t.get(k) is None for k in ("n_train", "n_test")):
            raise ConfigError(f"{where}/{task}: set n_train and n_test (an embedded stand-in draws that many examples; "
                              "null takes every image of a split only for inpainting or a task with a dataset)")
        size = _check_latent(task, t, f"{where}/{task}")
        _check_task_size(params, task, t, {**block["model"], **t.get("model", {})}, f"{where}/{task}", size)
    for name, entry in params["conditioned_methods"].items():
        if entry.get("denoiser", "network") != "network":
            raise ConfigError(f"params.yaml: conditioned_methods/{name}/denoiser: only 'network' (there is no exact "
                              "posterior mean of a conditional model here); remove it")
        for task in block["tasks"]:
            resolve_task(params, task, name)


def _check_latent(task: str, t: Mapping, where: str) -> int:
    """The size the task's network runs at (§5.1: the latent of a KL autoencoder of down-sampling
    factor f for a task with a ``latent`` block, size / f; else the task's size); a size that f
    does not divide (or that leaves no latent pixel) is a ConfigError naming the task and the fix."""
    if t.get("latent") is None:  # absent, or null: pixel space
        return t["size"]
    latent = {**LATENT_DEFAULTS, **t["latent"]}
    size, factor = t["size"], latent_factor(latent)
    if size % factor or size < factor:
        raise ConfigError(f"{where}/latent: the {task} task's size {size} is not divisible by its autoencoder's "
                          f"down-sampling factor {factor} (2**(len(ch_mult)-1), ch_mult {list(latent['ch_mult'])}): "
                          f"set size to a multiple of {factor} (e.g. {(size // factor + 1) * factor}), or give "
                          "latent/ch_mult fewer levels")
    return size // factor


def _check_task_size(params: Mapping, task: str, t: Mapping, model: Mapping, where: str,
                     net_size: int | None = None) -> None:
    """The task's size fits its network (divisible by the U-Net's down-sampling, cross-attention at
    its levels; ``net_size``: the latent size of a latent task, §5.1), the super-resolution scale,
    and inpainting's FID (the digits classifier and the preset's digits reference statistics, made
    at the digits' resolution)."""
    size, factor = net_size or t["size"], 2 ** (len(model["ch_mult"]) - 1)
    what = f"its latent size {size} (size / the autoencoder's factor)" if size != t["size"] else f"{size}"
    if size % factor:
        raise ConfigError(f"{where}/size: {what} is not divisible by {factor} (2**(len(ch_mult)-1) of its network, "
                          f"ch_mult {list(model['ch_mult'])}): use a multiple of {factor}")
    levels = [size // 2**i for i in range(len(model["ch_mult"]))]
    cross = model.get("cross_attn_resolutions")
    if cross is not None and (not cross or set(cross) - set(levels)):
        raise ConfigError(f"{where}/model/cross_attn_resolutions: {cross} must be a non-empty subset of the "
                          f"network's level resolutions {levels} (or null: every level)")
    size, scale = t["size"], t.get("scale", TASK_ONLY.get(task, {}).get("scale"))
    if scale and (size % scale or size <= 2 * scale):
        raise ConfigError(f"{where}/size: {size} must be a multiple of the scale {scale} above {2 * scale} (the "
                          f"PSNR crops {scale} pixels at each border): use e.g. {4 * scale}")
    if task == "inpainting":
        ds = inpainting_dataset(t)
        block = params["presets"][params["preset"]].get(ds)
        if block is None or block["resolution"] != size:
            have = f"resolution {block['resolution']}" if block else f"no {ds} block"
            raise ConfigError(f"{where}/size: {size}: inpainting's FID uses the extractor and the reference "
                              f"statistics of presets/{params['preset']}/{ds} ({have}): set size to that "
                              f"resolution, or add a {ds} block of that resolution to the preset")


def inpainting_dataset(t: Mapping) -> str:
    """The data set of an inpainting task block (its ``dataset``; digits, the embedded stand-in,
    by default), whose preset block gives inpainting's FID extractor and reference statistics."""
    return t.get("dataset") or "digits"


def _validate_convergence(params: Mapping, ds: str, block: Mapping, trained: Mapping) -> None:
    """The convergence figure needs trained methods and every checkpoint kept."""
    conv = block.get("convergence")
    if not conv:
        return
    where = f"params.yaml: presets/{params['preset']}/{ds}"
    unknown = [m for m in conv["methods"] if m not in trained]
    if unknown:
        raise ConfigError(f"{where}/convergence/methods: {unknown} are not trained methods "
                          f"(allowed: {', '.join(sorted(trained))})")
    train = block["train"]
    needed = -(-train["steps"] // train.get("ckpt_every", 1000))
    if train.get("keep_last", 3) < needed:
        raise ConfigError(f"{where}/train/keep_last: {train.get('keep_last', 3)} keeps too few checkpoints for the "
                          f"convergence figure: {train['steps']} steps every {train.get('ckpt_every', 1000)} need "
                          f"keep_last >= {needed}")


def _validate_denoisers(params: Mapping, trained: Mapping) -> None:
    """``denoiser: posterior_mean`` (the sampler ceiling) needs a Gaussian path: VP, VE or DDM
    with h_t = constant (``ddm.ceiling``)."""
    for section in ("methods", "ablation_methods", "solver_methods"):
        for name, entry in params[section].items():
            if entry.get("denoiser", "network") != "posterior_mean":
                continue
            model = trained[entry["model"]] if section == "solver_methods" else entry
            ht = model.get("ht", "main")
            active = section == "methods" or params["ablations" if section == "ablation_methods" else "solver_study"]
            if ht == "main" and not active:  # follows the top-level ht only when it runs
                continue
            ht = params["ht"] if ht == "main" else ht
            if model["process"] == "ddm" and ht != "constant":
                raise ConfigError(f"params.yaml: {_where(params, name)}: denoiser 'posterior_mean' needs a Gaussian "
                                  f"path, and DDM with ht '{ht}' is not one (allowed: ht constant, process vp or ve)")


def _validate_fit(params: Mapping) -> None:
    """Every sampler and grid fits its method's process (``ddm.registry``), so a misfit fails
    here and not in the sample job after training. The methods that will run are checked as
    resolved (top-level ``ht``, preset overrides); the others only where the fit does not depend
    on the top-level ``ht`` (``dvc exp run -S ht=linear`` must not trip over a switched-off DDIM)."""
    active = list(params["methods"])
    active += list(params["ablation_methods"]) if params["ablations"] else []
    active += list(params["solver_methods"]) if params["solver_study"] else []
    lines: list[str] = []
    for ds in dataset_names(params):
        for name in active:
            try:
                resolve(params, ds, name)
            except ConfigError as e:
                lines.append(str(e))
    trained = {**params["methods"], **params["ablation_methods"]}
    for section in ("methods", "ablation_methods", "solver_methods"):
        for name, entry in params[section].items():
            if name in active:
                continue
            model = trained[entry["model"]] if section == "solver_methods" else entry
            ht = model.get("ht", "main")
            msg = snapshot.fit_error(entry["sampler"], entry["grid"], model["process"], None if ht == "main" else ht,
                            entry.get("final_step", "paper"))
            if msg:
                lines.append(f"params.yaml: {_where(params, name)}: {msg}")
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))  # each misfit once, in order


def _where(params: Mapping, method: str) -> str:
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
        raise ConfigError(f"params.yaml: {_where(params, method)}{note}: {msg}")


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml or the file ``path`` (every failure is a one-line ConfigError
    naming that file)."""
    params = read_yaml(path)
    if params is None:
        raise ConfigError(f"{path} is empty: it must hold the experiment config (see the shipped params.yaml)")
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping; got {type(params).__name__}")
    plugins.load(params.get("plugins"), Path(path).resolve().parent, str(path))  # before validation (ddm.plugins)
    validate(params, source=path)
    return params


def dataset_names(params: Mapping) -> list[str]:
    return sorted(params["presets"][params["preset"]])


def all_methods(params: Mapping) -> dict[str, dict]:
    return {**params["methods"], **params["ablation_methods"], **params["solver_methods"]}


def model_of(params: Mapping, method: str) -> str:
    """The method whose trained network ``method`` uses (itself, unless a solver variant)."""
    entry = params["solver_methods"].get(method)
    return entry["model"] if entry else method


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
    block = preset[dataset]
    cfg = {
        "dataset": dataset,
        "channels": DATASET_CHANNELS[dataset],
        "resolution": block["resolution"],
        "model": copy.deepcopy(block["model"]),
        "train": {**copy.deepcopy(block["train"]), "seed": params["seed"]},
        **_method_parts(params, methods[method], block["method_overrides"].get(method, {})),
        # keep the EMA weights of every checkpoint in the model file (the convergence figure)
        "snapshots": method in block.get("convergence", {}).get("methods", []),
    }
    check_fit(params, method, cfg)
    return cfg


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
    cond_channels, resolution, metric, data (what ``ddm.tasks`` draws: size, n_train, n_test,
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
            **{k: v for k, v in t.items() if k not in ("model", "train", "latent")}}
    parts = _method_parts(params, methods[method], {})
    if "paste_known" in data:
        parts["sampling"]["paste_known"] = data.pop("paste_known")
    cfg = {
        "task": task, **{k: TASKS[task][k] for k in ("channels", "cond_channels", "metric")},
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
