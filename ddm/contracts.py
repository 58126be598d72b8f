"""The files the pipeline's steps hand each other, declared once: what a reader may rely on.

* JSON products (:data:`SCHEMAS`): JSON Schemas checked with jsonschema. :func:`load_json_product` reads
  one with its checksum verified (``ddm.io.load_json``) and refuses, in one line naming the first
  field that is missing or of the wrong type, a file that is not what its maker writes.
* Image sets (a prepared dataset of ``ddm prepare``, a sample set of ``ddm sample``):
  :func:`load_images`, a uint8 tensor (N, C, H, W) checked for channels, resolution and count; a
  sample set as one file or as its shards: :func:`load_sample_set`.
* FID reference statistics (``ddm refstats``): :func:`check_reference`.
* The metric files ``ddm stats`` reads are results, each counted once: :func:`check_metric_files`;
  those of the conditioned tasks: :func:`check_task_metric_files`.
* Model files: ``ddm.modelfile``; task splits: ``ddm.conditioned.load_split``.

Every refusal is a ``ddm.io.InputError`` (``ddm`` exits with code 2) naming the file and the
command that writes it. Standard library and jsonschema only at import (torch inside
:func:`load_images`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddm.io import InputError, check_input_file, load_json as _json_file, load_torch

__all__ = ["SCHEMAS", "MAKERS", "shape_error", "load_json_product", "load_images", "load_sample_set", "check_reference",
           "is_autoencoder_file", "check_metric_files", "check_task_metric_files"]

NUM, INT, STR = {"type": "number"}, {"type": "integer"}, {"type": "string"}


def _obj(required: dict, optional: dict | None = None) -> dict:
    """An object with these required (and optional) fields; other fields are allowed."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def _list(items: dict) -> dict:
    return {"type": "array", "items": items}


def _map(values: dict) -> dict:
    return {"type": "object", "additionalProperties": values}


_SUMMARY = {"values": _list(NUM), "mean": NUM, "std": {"type": ["number", "null"]}}
# with training-seed replicates (ddm.replicates): ``unit`` and the sample-set spread of network 0
_RESULT = _obj({**_SUMMARY, "n": INT, "num_samples": INT},
               {"kid": _obj(_SUMMARY), "unit": STR, "sample_sets": _obj({**_SUMMARY, "n": INT})})
_ROW = {"method": STR, "label": STR}
_TASKS = _map(_obj({"metric": STR, "results": _map(_map(_RESULT)), "markers": {"type": "object"},
                    "references": _map(NUM)}))
_SOLVER_TABLE = _obj({"rows": _list(STR), "labels": _map(STR),
                      "columns": _map(_obj({"best": {}, "marker": {}}))})
_DATASET = _obj({"extractor": STR, "reference": STR, "results": _map(_map(_RESULT)), "table1": _map({"type": "object"})},
                {"solver_table": _SOLVER_TABLE,  # ddm.plateau: method -> verdict and its checks
                 "plateau": _map(_obj({"verdict": {"enum": ["converged", "not converged", "borderline", "not checked"]},
                                       "checks": _list({"type": "object"})}))})

#: kind -> JSON Schema of that JSON product.
SCHEMAS: dict[str, dict] = {
    "extractor": _obj({"extractor": STR, "weights": STR}),
    "evaluation": _obj({"dataset": STR, "method": STR, "nfe": INT, "repeat": INT, "fid": NUM, "num_samples": INT,
                        "extractor": STR, "reference": STR}, {"kid": NUM}),
    "metrics": _obj({"preset": STR, "ht": STR, "table1_methods": _list(STR), "datasets": _map(_DATASET)},
                    {"method_labels": _map(STR), "shared_networks": _map(STR),
                     "ablation_rows": _obj({}, {"table4": _list(_obj(_ROW)), "table5": _list(_obj({**_ROW, "group": STR}))}),
                     "conditioned": _obj({"methods": _list(STR), "labels": _map(STR), "table2_nfe": _list(INT),
                                          "table3_nfe": _list(INT), "tasks": _TASKS})}),
    "convergence": _obj({"dataset": STR, "method": STR, "num_samples": INT, "extractor": STR,
                         "rows": _list({"type": "object"})}),
    "fig3": _obj({"nfe": INT, "num_samples": INT, "curves": _map(_obj({"t": _list(NUM), "mse": _list(NUM)}))}),
    "task_metric": _obj({"task": STR, "method": STR, "nfe": INT, "repeat": INT, "metric": STR, "value": NUM,
                         "num_samples": INT}, {"extra": _map(NUM)}),
    "task_reference": _obj({"task": STR, "metric": STR, "references": _map(NUM), "num_samples": INT}),
    # a latent task's autoencoder (§5.1)
    "autoencoder_metric": _obj({"task": STR, "psnr": NUM, "factor": INT, "z_channels": INT, "num_samples": INT}),
}

#: kind -> (what the file is called in messages, the command that writes it).
MAKERS: dict[str, tuple[str, str]] = {
    "extractor": ("FID extractor file", "ddm extractor"),
    "evaluation": ("metric file", "ddm evaluate"),
    "metrics": ("metrics file", "ddm stats"),
    "convergence": ("convergence file", "ddm convergence"),
    "fig3": ("Fig. 3 curves file", "ddm fig3"),
    "task_metric": ("task metric file", "ddm evaluate-task"),
    "task_reference": ("task metric file", "ddm evaluate-task"),
    "autoencoder_metric": ("autoencoder metric file", "ddm train-autoencoder"),
}

_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}


def _kind(x: Any) -> str:
    return _KINDS.get(type(x), "a number" if isinstance(x, (int, float)) else type(x).__name__)


def shape_error(obj: Any, kind: str) -> str | None:
    """Where ``obj`` departs from ``SCHEMAS[kind]`` (the first error, by its place in the file:
    ``field/sub: missing``, ``field: expected number, got a string``), or None."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(SCHEMAS[kind]).iter_errors(obj),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path)
    if e.validator == "required":
        missing = next(k for k in e.validator_value if k not in e.instance)
        return f"{where + '/' if where else ''}{missing}: missing"
    want = e.validator_value if e.validator == "type" else e.message
    want = " or ".join(want) if isinstance(want, list) else want
    return f"{where or '(top level)'}: expected {want}, got {_kind(e.instance)}"


def load_json_product(path, kind: str) -> dict:
    """A JSON product of ``kind`` (:data:`SCHEMAS`) with its checksum verified; InputError naming
    the first field that is not what its maker writes."""
    what, maker = MAKERS[kind]
    obj = _json_file(path, what, maker)
    err = shape_error(obj, kind)
    if err:
        raise InputError(f"{what} {path} is not a file of `{maker}`: {err}")
    return obj


def is_autoencoder_file(path) -> bool:
    """A metric file of ``ddm train-autoencoder`` (§5.1's latent space): it lies in a folder
    named ``autoencoder`` (results/models/autoencoder/<task>.json)."""
    return Path(path).parent.name == "autoencoder"


def load_images(path, what: str = "sample file", maker: str = "ddm sample", *, min_count: int = 1,
                channels: int | None = None, resolution: int | None = None, mmap: bool = False,
                with_meta: bool = False):
    """A uint8 image tensor (N, C, H, W) from a file of ``ddm prepare`` / ``ddm sample``
    (``mmap``: read from the file as it is used, for a data set larger than memory; ``with_meta``:
    the pair (images, the file's meta: a sample file's set and range, ``ddm.shards.shard_meta``))."""
    import torch

    x, meta = load_torch(path, what, maker, mmap=mmap, with_meta=True)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        raise InputError(f"{what} {path} holds {got}; expected uint8 images (N, C, H, W) written by `{maker}`")
    if x.dtype != torch.uint8:
        raise InputError(f"{what} {path} holds {x.dtype} images; expected torch.uint8 in [0, 255] "
                         f"(as `{maker}` writes them)")
    if x.shape[1] not in (1, 3) or (channels is not None and x.shape[1] != channels):
        want = channels if channels is not None else "1 or 3"
        raise InputError(f"{what} {path} has {x.shape[1]} channels; the dataset has {want}")
    if resolution is not None and tuple(x.shape[2:]) != (resolution, resolution):
        raise InputError(f"{what} {path} has images of {x.shape[2]}x{x.shape[3]}; "
                         f"the dataset's resolution is {resolution}x{resolution}")
    if x.shape[0] < min_count:
        raise InputError(f"{what} {path} holds {x.shape[0]} images; at least {min_count} are needed")
    return (x, meta) if with_meta else x


def load_sample_set(paths: list, *, channels: int | None = None, resolution: int | None = None,
                    expect: dict | None = None):
    """A sample set of ``ddm sample`` given as one file (its images, at least 2, checked and in
    memory: the one-pass FID) or as its shard files in order (each checked to be a non-empty file
    now; an iterator that loads and checks one shard at a time as it is read). ``expect``: the
    set's keys (``ddm.shards.SET_KEYS``); each file must then record that set and its place in it,
    the files must cover the set once, in order (``ddm.shards.SetCheck``)."""
    from ddm.shards import SetCheck

    check = SetCheck(expect) if expect is not None else None

    def shard(path, min_count=1):
        x, meta = load_images(path, min_count=min_count, channels=channels, resolution=resolution, with_meta=True)
        if check is not None:
            check.add(path, meta, len(x))
        return x

    def stream():
        yield from map(shard, paths)
        if check is not None:
            check.finish()

    one = shard(paths[0], min_count=2) if len(paths) == 1 else None
    for path in paths:
        check_input_file(path, "sample file")
    if one is None:
        return stream()
    if check is not None:
        check.finish()
    return one


def check_reference(path) -> dict:
    """A FID reference statistics file of ``ddm refstats`` (checked before any feature is computed),
    loaded (``ddm.metrics.load_reference_stats``)."""
    from ddm.metrics import load_reference_stats

    check_input_file(path, "FID reference file")
    try:
        return load_reference_stats(path)
    except InputError:  # its checksum does not verify: the refusal names the fix
        raise
    except Exception:  # any failure to read means the file is unusable
        raise InputError(f"{path} is not a ddm FID reference statistics file: write it with `ddm refstats`") from None


def check_metric_files(paths, params: dict, params_file: str) -> None:
    """The metric files of ``ddm stats`` are results, each counted once: no file twice (by path or
    by content), one file per (dataset, method, NFE, repeat), a method of the params file (or a
    training-seed replicate of one, ``ddm.replicates``), a FID that is a finite number >= 0 and a
    finite KID where there is one; and a table's columns compare (``_check_counts``)."""
    import hashlib
    import math
    import os

    from ddm.replicates import check_method

    seen, tables = {}, {}
    for i, p in enumerate(paths):
        obj = load_json_product(p, "evaluation")
        key = tuple(obj[k] for k in ("dataset", "method", "nfe", "repeat"))
        for kind, mark in (("path", os.path.realpath(p)), ("content", hashlib.sha256(Path(p).read_bytes()).digest()),
                           ("set", key)):
            j, first = seen.setdefault((kind, mark), (i, p))
            if j == i:
                continue
            if kind == "set":
                raise InputError(f"metric files {first} and {p} are both of {obj['dataset']}/{obj['method']} NFE "
                                 f"{obj['nfe']} repeat {obj['repeat']}: a sample set counts once; remove the stale one")
            same = "the same file" if kind == "path" else "identical"
            raise InputError(f"metric files {first} and {p} are {same}: a sample set counts once; give each file once")
        try:
            method = check_method(params, obj["method"])
        except ValueError as e:
            raise InputError(f"metric file {p}: {e}; {params_file} does not define it: leave the file out or add "
                             "the method") from None
        if not (math.isfinite(obj["fid"]) and obj["fid"] >= 0):
            raise InputError(f"metric file {p}: fid {obj['fid']} is not a FID (a finite number >= 0): evaluate its "
                             "sample set again with `ddm evaluate`")
        if "kid" in obj and not math.isfinite(obj["kid"]):
            raise InputError(f"metric file {p}: kid {obj['kid']} is not finite: evaluate its sample set again with "
                             "`ddm evaluate`")
        table = next(t for t in ("methods", "ablation_methods", "solver_methods") if method in params[t])
        tables.setdefault((obj["dataset"], table), []).append((p, obj))
    for (dataset, table), files in tables.items():
        _check_counts(dataset, table, files)


def check_task_metric_files(paths) -> None:
    """The files of the conditioned tasks ``ddm stats`` reads (Tables 2 and 3), each what its maker
    writes: per sample set (``ddm evaluate-task``), each task's reference.json, and a latent task's
    autoencoder metrics (``ddm train-autoencoder``, :func:`is_autoencoder_file`)."""
    for p in paths:
        if is_autoencoder_file(p):
            load_json_product(p, "autoencoder_metric")
            continue
        load_json_product(p, "task_reference" if Path(p).name == "reference.json" else "task_metric")


#: What a section of params.yaml's methods is called in a refusal (the table its FIDs make).
_TABLE_NAMES = {"methods": "Table 1", "ablation_methods": "the ablation tables", "solver_methods": "the solver table"}


def _check_counts(dataset: str, table: str, files: list) -> None:
    """The columns of a FID table compare only at one sample count (FID is biased upward at
    small counts): a table whose files have several counts needs a KID in every file (``ddm.kid``;
    unbiased, so comparable across counts). Else one line naming the counts and a file without KID."""
    counts = sorted({obj["num_samples"] for _, obj in files})
    no_kid = [p for p, obj in files if "kid" not in obj]
    if len(counts) > 1 and no_kid:
        raise InputError(f"{_TABLE_NAMES[table]} on {dataset}: its sample sets have {' and '.join(map(str, counts))} "
                         f"samples, and {no_kid[0]} has no KID, so its FID columns do not compare: evaluate the sets "
                         "again with `ddm evaluate` (which adds KID) or give every column the same num_samples")
