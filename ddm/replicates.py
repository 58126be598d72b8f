"""Training-seed replicates: K independently trained networks per method (params.yaml ``replicates``).

Retraining moves FID about 3x more than resampling does, so a t-test over sample sets of ONE
trained network overstates what a comparison shows; independently trained networks are the
honest replicate. With ``replicates: K`` every Table 1 method (and, with ``ablations``, every
Table 4 and Table 5 row) is trained K times:

* replicate 0 is the method itself (its name, its files, training seed ``seed``: K = 1 is exactly
  the run without replicates);
* replicate k >= 1 is the model ``<method>-s<k>`` (``replicate_name``), trained with seed
  ``seed + k`` (``replicate_seed``). The seed is in its resolved config (``ddm.config.resolve``),
  so in its model file and in the hash its checkpoints are kept under. Method names of params.yaml
  cannot hold a ``-`` (the schema), so no entry collides with a replicate.

Each network is scored on its own sample set: replicate k samples repeat k's seeds
(``ddm.modelfile.sample_seeds``), so the K values are independent in both the training and the
sampling noise. Replicate 0 keeps all its repeated sample sets; their spread is the sample-set std,
reported next to the training-seed std (``ddm.report.collect``).
"""

from __future__ import annotations

import re
from typing import Mapping

from ddm.yamlio import ConfigError

__all__ = ["replicate_count", "replicate_name", "split_replicate", "replicate_seed", "replicated_methods",
           "check_replicate", "check_method"]

_REPLICATE = re.compile(r"(?P<method>[a-z][a-z0-9_]*)-s(?P<k>[1-9][0-9]*)")


def replicate_count(params: Mapping) -> int:
    """K: the training seeds per replicated method (params.yaml ``replicates``, default 1)."""
    return int(params.get("replicates", 1))


def replicate_name(method: str, k: int) -> str:
    """The model name of replicate ``k`` of ``method``: the method itself for k = 0, else ``<method>-s<k>``."""
    return method if k == 0 else f"{method}-s{k}"


def split_replicate(name: str) -> tuple[str, int]:
    """(method, k) of a model name (``ddm-s2`` -> ``("ddm", 2)``; a method's own name -> k = 0)."""
    m = _REPLICATE.fullmatch(name)
    return (m["method"], int(m["k"])) if m else (name, 0)


def replicate_seed(seed: int, k: int) -> int:
    """The training seed of replicate ``k`` of a run with top-level ``seed``: ``seed + k``."""
    return seed + k


def replicated_methods(params: Mapping) -> list[str]:
    """The methods trained K times: Table 1's (``methods``) and, with ``ablations``, the rows of
    Table 4 (``role: table4``) and Table 5 (``role: table5``). Table 5's weightings the paper has
    near-tied (14.24 / 13.95 / 13.92); Table 4's rows are ranked, and one network a row cannot rank
    them where a retrained network moves FID more than the families differ (docs/results.md, the
    converged run with ablations). A row that trains the same network as another
    (``ddm.config.training_twins``: Table 4's h_t = c and Table 1's DDM) shares its replicates too."""
    methods = list(params["methods"])
    if params.get("ablations"):
        methods += [m for m, e in params["ablation_methods"].items() if e.get("role") in ("table4", "table5")]
    return methods


def check_replicate(params: Mapping, name: str) -> str:
    """The method of replicate ``name`` (``ddm-s1`` -> ``ddm``); ConfigError naming what is wrong
    when ``name`` is a replicate of a method that is not replicated, or beyond ``replicates``."""
    method, k = split_replicate(name)
    if k == 0:
        return method
    if method not in replicated_methods(params):
        raise ConfigError(f"model '{name}': '{method}' has no training-seed replicates (only Table 1's methods "
                         f"and, with ablations, the rows of Tables 4 and 5: {', '.join(replicated_methods(params))})")
    if k >= replicate_count(params):
        raise ConfigError(f"model '{name}': replicate {k} of '{method}', but replicates is {replicate_count(params)} "
                         f"(replicates 1..{replicate_count(params) - 1} exist): raise `replicates` in params.yaml")
    return method


def check_method(params: Mapping, name: str) -> str:
    """The method of model ``name`` (itself, or the method of a replicate: ``check_replicate``);
    ConfigError when it is no method of params (Table 1, ablation or solver variant)."""
    known = {**params["methods"], **params["ablation_methods"], **params["solver_methods"]}
    method = check_replicate(params, name)
    if method not in known:
        raise ConfigError(f"unknown method '{name}' (allowed: {', '.join(sorted(known))})")
    return method
