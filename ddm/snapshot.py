"""The registries' names as the readers of params.yaml (``ddm.validation``, ``ddm.config``, ``ddm.roles``) see them:
:func:`load` gives the snapshot of the registries (``ddm.registry.snapshot``)

* live, when torch is already imported: a program that defined a family or sampler of its own
  (it imported ddm.families or ddm.registry to do so) sees it at once;
* otherwise the one cached by ``ddm.catalog`` (written from the live registries the first time,
  which imports torch once; see ``ddm.catalog`` for the cache file and what a snapshot holds).

This module sits above both: ``ddm.registry`` depends on the torch-free ``ddm.catalog``, never
the reverse, and only this module imports the registries to fill the cache.
:func:`fit_error` is ``ddm.catalog``'s on the snapshot that :func:`load` gives; :func:`dataset_facts`
a live view of one fact of each dataset (its channels, resolution or report label).
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Mapping

from ddm import catalog

__all__ = ["load", "fit_error", "dataset_facts"]


def _live() -> dict[str, Any]:
    # Names and labels: they validate params.yaml, and a job sees what they change through its
    # resolved config (a rule param); the report, which prints labels, imports ddm.registry
    # itself. So this import is no code of a job's own (ddm.codedeps).
    from ddm.registry import snapshot  # codedeps: names only

    return snapshot()


_CACHED: list[dict[str, Any]] = []  # the cached snapshot, once read in this process


def load() -> dict[str, Any]:
    """The registries' snapshot: live when torch is imported, else the cached one (written on a
    miss; read once per process)."""
    if "torch" in sys.modules:
        return _live()
    if not _CACHED:
        snap = catalog.cached()
        if snap is None:
            snap = _live()
            catalog.store(snap)
        _CACHED.append(snap)
    return _CACHED[0]


class _Facts(Mapping[str, Any]):
    """dataset -> one fact of it (``channels``, ``resolution``, ``label``), live: read from
    :func:`load`'s ``datasets`` at each access, so a dataset a plug-in registers is seen (ddm.datasets)."""

    def __init__(self, key: str):
        self.key = key

    def _table(self) -> dict[str, Any]:
        return {k: v[self.key] for k, v in load()["datasets"].items() if v[self.key] is not None}

    def __getitem__(self, name: str) -> Any:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def dataset_facts(key: str) -> Mapping[str, Any]:
    """A live view dataset -> its ``key`` (``channels``, ``resolution`` or ``label``; datasets
    without one are left out): ``ddm.config.DATASET_CHANNELS``, ``ddm.report.labels.DATASET_LABELS``."""
    return _Facts(key)


def fit_error(sampler: str, grid: str, process: str, ht: str | None = None,
              final_step: str = "paper") -> str | None:
    """``ddm.catalog.fit_error`` on :func:`load`'s snapshot."""
    return catalog.fit_error(sampler, grid, process, ht, final_step, cat=load())

