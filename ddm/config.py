"""params.yaml: load, validate against workflow/schemas/params.schema.yaml, resolve per job.

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

__all__ = ["ConfigError", "load_params", "validate", "dataset_names", "all_methods", "resolve",
           "resolved_hash", "model_of", "SCHEMA_PATH", "METHOD_DEFAULTS"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "params.schema.yaml"

#: Defaults of a method entry, per process (the paper's choices; options named in the README).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ddm": {"ht": "main", "clamp_free": None, "weighting": "inverse", "head": "decoder", "loss_type": "l2",
            "reduction": "mean", "recon_weight": 0.0, "t_min": 1e-4, "clip": None, "rho": 2.0, "t_end": 1e-3},
    "vp": {"beta_min": 0.1, "beta_max": 20.0, "x0_branch": False, "head": "conv", "loss_type": "l2",
           "reduction": "mean", "t_min": 1e-5, "clip": None, "rho": 2.0, "t_end": 1e-3},
    "ve": {"sigma_min": 0.01, "sigma_max": 50.0, "head": "decoder", "loss_type": "l2", "reduction": "mean",
           "t_min": 1e-5, "clip": None, "rho": 2.0, "t_end": 1e-5},
}

#: Method keys that only sampling reads (a change reruns sampling, not training).
SAMPLING_KEYS = frozenset({"sampler", "grid", "t_end", "rho", "clip"})

#: The channel count of each dataset as the pipeline loads it.
DATASET_CHANNELS = {"digits": 1, "cifar10": 3, "celebahq256": 3, "imagefolder": 3}


class ConfigError(ValueError):
    """params.yaml does not satisfy its schema, or names something that does not exist."""


def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def validate(params: Mapping) -> None:
    """Validate against the schema; errors name the path and the allowed values."""
    import jsonschema

    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            allowed = ""
            if "enum" in e.schema:
                allowed = f" (allowed: {', '.join(map(str, e.schema['enum']))})"
            elif e.validator == "additionalProperties" and "properties" in e.schema:
                allowed = f" (allowed: {', '.join(sorted(e.schema['properties']))})"
            lines.append(f"params.yaml: {path}: {e.message}{allowed}")
        raise ConfigError("\n".join(lines))
    if params["preset"] not in params["presets"]:
        raise ConfigError(
            f"params.yaml: preset: '{params['preset']}' is not defined "
            f"(allowed: {', '.join(sorted(params['presets']))})"
        )
    sections = ("methods", "ablation_methods", "solver_methods")
    for i, a in enumerate(sections):
        for b in sections[i + 1 :]:
            clash = set(params[a]) & set(params[b])
            if clash:
                raise ConfigError(f"params.yaml: {a} and {b} both define {sorted(clash)}")
    trained = {**params["methods"], **params["ablation_methods"]}
    for name, entry in params["solver_methods"].items():
        if entry["model"] not in trained:
            raise ConfigError(
                f"params.yaml: solver_methods/{name}/model: '{entry['model']}' is not a trained method "
                f"(allowed: {', '.join(sorted(trained))})"
            )
    method_keys = set(schema["definitions"]["method"]["properties"])
    method_validator = validator.evolve(schema={**schema["definitions"]["method"], "definitions": schema["definitions"]})
    for ds, block in params["presets"][params["preset"]].items():
        where = f"presets/{params['preset']}/{ds}/method_overrides"
        unknown = set(block["method_overrides"]) - set(trained)
        if unknown:
            raise ConfigError(
                f"params.yaml: {where} names unknown methods {sorted(unknown)} "
                f"(allowed: {', '.join(sorted(trained))})"
            )
        for name, override in block["method_overrides"].items():
            bad = set(override) - method_keys
            if bad:
                raise ConfigError(
                    f"params.yaml: {where}/{name}: unknown keys {sorted(bad)} (allowed: {', '.join(sorted(method_keys))})"
                )
            merged = {**trained[name], **override}
            errors = list(method_validator.iter_errors(merged))
            if errors:
                raise ConfigError(f"params.yaml: {where}/{name}: {errors[0].message}")


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no params file at {path}: run from the repository root or pass --params")
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping; got {type(params).__name__}")
    validate(params)
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
    methods = all_methods(params)
    if method not in methods:
        raise ConfigError(f"unknown method '{method}' (allowed: {', '.join(sorted(methods))})")
    if method in params["solver_methods"]:
        variant = params["solver_methods"][method]
        cfg = resolve(params, dataset, variant["model"])
        cfg["sampling"].update({k: v for k, v in variant.items() if k in SAMPLING_KEYS})
        return cfg
    block = preset[dataset]
    entry = dict(methods[method])
    m = copy.deepcopy(METHOD_DEFAULTS[entry["process"]])
    m.update(entry)
    m.update(block["method_overrides"].get(method, {}))
    if m["process"] == "ddm" and m["ht"] == "main":
        m["ht"] = params["ht"]
    return {
        "dataset": dataset,
        "channels": DATASET_CHANNELS[dataset],
        "resolution": block["resolution"],
        "model": copy.deepcopy(block["model"]),
        "train": {**copy.deepcopy(block["train"]), "seed": params["seed"]},
        "method": {k: v for k, v in m.items() if k not in SAMPLING_KEYS},
        "sampling": {k: v for k, v in m.items() if k in SAMPLING_KEYS},
    }


def resolved_hash(cfg: Mapping, keys: tuple[str, ...] = ("dataset", "channels", "resolution", "model", "train", "method")) -> str:
    """A short content hash of the training-relevant part of a resolved config."""
    blob = json.dumps({k: cfg[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
