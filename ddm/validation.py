"""params.yaml, read and checked: the package's schema (ddm/data/params.schema.yaml) and the
checks beyond it, before any job starts (``load_params``, ``validate``).

Every list of names in the schema comes from the code that defines the names, when the schema is
read (:func:`schema`; the file keeps none of them): the registries' names (h_t families,
samplers, grids, final steps, weightings, processes, datasets, FID extractors) and the fixed
choices of torch-importing modules (heads, loss types, reductions, condition encoders,
precisions) through their snapshot (``ddm.registry.schema_enums``, read through
``ddm.snapshot``: no torch import), the report's roles (``ddm.roles.ROLES``) and the conditioned
tasks and their data sets (``ddm.config.TASKS``) directly. So a family or sampler registered
anywhere (a plug-in, ``ddm.plugins``) validates, and a name is added in one place.

Beyond the schema: finite numbers, a preset that exists, methods defined once, every sampler and
grid fitting its process (``ddm.config.resolve`` of each method that runs), NFE and sample counts
that fit in memory (``ddm.limits``), shard sizes (``ddm.shards``), the convergence figure's
checkpoints, the sampler ceiling's Gaussian path and the conditioned tasks' sizes. Every failure
is one ConfigError line naming the path, the value, the allowed values and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import yaml

from ddm import plugins, snapshot
from ddm.config import (DATASET_CHANNELS, LATENT_DEFAULTS, TASK_ONLY, TASKS, conditioned_block, dataset_names,
                        inpainting_dataset, latent_factor, method_path, resolve, resolve_task)
from ddm.limits import size_errors
from ddm.resources import SCHEMA_PATH
from ddm.roles import ROLES  # codedeps: names only (what params.yaml may name)
from ddm.shards import shard_size_error
from ddm.yamlio import PREFIX, ConfigError, ConfigLayer, name_source, nonfinite_lines, read_yaml

__all__ = ["load_params", "validate", "schema", "schema_names", "SCHEMA_ENUMS"]

_METHOD = ("definitions", "method", "properties")
#: Each list of names of the schema (:func:`schema_names`) -> the schema node whose ``enum`` it is.
SCHEMA_ENUMS: dict[str, tuple[str, ...]] = {
    "family": ("definitions", "family"),
    **{key: (*_METHOD, key) for key in ("ht", "process", "weighting", "sampler", "grid", "final_step", "head",
                                        "loss_type", "reduction", "role")},
    "dataset": ("properties", "presets", "additionalProperties", "propertyNames"),
    "extractor": ("definitions", "dataset", "properties", "fid", "properties", "extractor"),
    "precision": ("definitions", "dataset", "properties", "train", "properties", "precision"),
    "encoder": ("definitions", "cond_model", "properties", "encoder"),
    "conditioning": ("definitions", "cond_model", "properties", "conditioning"),
    "task_dataset": ("definitions", "cond_task", "properties", "dataset"),
    "task_metric": ("definitions", "cond_task", "properties", "metrics", "items"),
}
#: The schema node whose ``properties`` are the conditioned tasks (``ddm.config.TASKS``), each a ``cond_task``.
TASKS_NODE = ("definitions", "cond_preset", "properties", "tasks")


def schema_names() -> dict[str, list[str]]:
    """The names of each list of :data:`SCHEMA_ENUMS`, from the code that defines them: the
    snapshot's (``ddm.registry.schema_enums``: the registries, heads, loss types, reductions,
    encoders, precisions), the roles of an ablation method (``ddm.roles.ROLES``) and the data sets
    a conditioned task may name (``ddm.config.TASKS``, in task order)."""
    task_datasets = [d for t in TASKS.values() for d in t["datasets"]]
    return {**snapshot.load()["enums"], "role": list(ROLES), "task_dataset": list(dict.fromkeys(task_datasets))}


def schema() -> dict:
    """The params.yaml schema, read from the package (``ddm.resources.SCHEMA_PATH``), with the
    enums of :data:`SCHEMA_ENUMS` set to the names defined now (:func:`schema_names`) and the
    conditioned tasks of ``ddm.config.TASKS`` as the properties of :data:`TASKS_NODE`."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        out = yaml.safe_load(f)
    for name, values in schema_names().items():
        _node(out, SCHEMA_ENUMS[name])["enum"] = list(values)
    _node(out, TASKS_NODE)["properties"] = {task: {"$ref": "#/definitions/cond_task"} for task in TASKS}
    return out


def _node(tree: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        tree = tree[key]
    return tree


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
    _check_schema(validator, params)
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
        _check_batch_split(block["train"], f"params.yaml: presets/{params['preset']}/{ds}/train")
        why = block.get("shard_size") is not None and shard_size_error(block["shard_size"])
        if why:
            raise ConfigError(f"params.yaml: presets/{params['preset']}/{ds}/shard_size: {why}")
    _validate_fit(params)
    _validate_fid_weights(params)
    _validate_denoisers(params, trained)
    _validate_conditioned(params, validator, schema_)


def _check_schema(validator, params: Mapping) -> None:
    """The schema's errors of ``params`` as one ConfigError, a line per value (its path, the
    message, the allowed values or keys where the schema lists them); none: nothing."""
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
                allowed = f" (allowed: {', '.join(map(str, e.schema['enum'])) or 'none'})"
            elif e.validator == "additionalProperties" and "properties" in e.schema:
                allowed = f" (allowed: {', '.join(sorted(e.schema['properties']))})"
            lines.append(f"params.yaml: {path}: {e.message}{allowed}")
        raise ConfigError("\n".join(lines))


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
        _check_task_metrics(task, t, f"{where}/{task}/metrics")
        _check_batch_split({**block["train"], **t.get("train", {})}, f"{where}/{task}/train")
        if t.get("latent"):
            _check_batch_split(t["latent"], f"{where}/{task}/latent")
        size = _check_latent(task, t, f"{where}/{task}")
        _check_task_size(params, task, t, {**block["model"], **t.get("model", {})}, f"{where}/{task}", size)
    for name, entry in params["conditioned_methods"].items():
        if entry.get("denoiser", "network") != "network":
            raise ConfigError(f"params.yaml: conditioned_methods/{name}/denoiser: only 'network' (there is no exact "
                              "posterior mean of a conditional model here); remove it")
        for task in block["tasks"]:
            resolve_task(params, task, name)


def _check_batch_split(train: Mapping, where: str) -> None:
    """A training block's batch_size splits evenly over its processes (gpus x nodes) and its
    gradient-accumulation passes (accum), as ``ddm.training.TrainConfig`` requires at run time."""
    parts = train.get("accum", 1) * train.get("gpus", 1) * train.get("nodes", 1)
    if train["batch_size"] % parts:
        raise ConfigError(f"{where}/batch_size: {train['batch_size']} does not split into "
                          f"accum x gpus x nodes = {parts} equal parts; set batch_size to a multiple of {parts} or "
                          "change accum")


def _check_task_metrics(task: str, t: Mapping, where: str) -> None:
    """Each extra metric a task names (``ddm.task_metrics``) fits that task."""
    facts = snapshot.load()["task_metrics"]
    for name in t.get("metrics", []):
        if task not in facts[name]["tasks"]:
            raise ConfigError(f"{where}: '{name}' does not score the {task} task (it scores: "
                              f"{', '.join(facts[name]['tasks'])}); remove it from this task's metrics")


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
    if model.get("conditioning") == "concat":  # §B.2's reading: a conv encoder's features at x_t's own size
        taken = {k: model.get(k) for k in ("cross_attn_resolutions", "encoder_weights")}
        taken.update(encoder=model.get("encoder") if model.get("encoder", "conv") != "conv" else None,
                     latent="a latent block" if t.get("latent") is not None else None)
        taken = {k: v for k, v in taken.items() if v is not None}
        if taken:
            raise ConfigError(f"{where}/model/conditioning: 'concat' joins a conv encoder's features to x_t's at its "
                              f"own size; the task also sets {taken}: remove those, or use conditioning "
                              "'cross_attention' (it takes a latent task's pixel condition, Swin-B, chosen levels)")
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


def _validate_fid_weights(params: Mapping) -> None:
    """A file ``fid: weights:`` names is there, and an extractor that reads its weights from params.yaml
    alone (``ddm.names.EXTRACTORS``' ``weights: params``, a plug-in's by default) has one named."""
    sources = snapshot.load()["extractors"]
    for ds, block in params["presets"][params["preset"]].items():
        name, path = block["fid"]["extractor"], block["fid"].get("weights")
        where = f"params.yaml: presets/{params['preset']}/{ds}/fid/weights"
        if path is None and sources[name]["weights"] == "params":
            raise ConfigError(f"{where}: null, but FID extractor '{name}' reads its weights from the file named here: "
                              "set it to the path of that file")
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{where}: '{path}' is not a file (FID extractor '{name}'): set it to the path of the "
                              "extractor's weights file")


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
                raise ConfigError(f"params.yaml: {method_path(params, name)}: denoiser 'posterior_mean' needs a Gaussian "
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
                lines.append(f"params.yaml: {method_path(params, name)}: {msg}")
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))  # each misfit once, in order


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


