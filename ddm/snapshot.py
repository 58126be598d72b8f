"""The registries' names as the readers of params.yaml (``ddm.config``, ``ddm.roles``) see them:
:func:`load` gives the snapshot of the registries (``ddm.registry.snapshot``)

* live, when torch is already imported: a program that defined a family or sampler of its own
  (it imported ddm.process or ddm.registry to do so) sees it at once;
* otherwise the one cached by ``ddm.catalog`` (written from the live registries the first time,
  which imports torch once; see ``ddm.catalog`` for the cache file and what a snapshot holds).

This module sits above both: ``ddm.registry`` depends on the torch-free ``ddm.catalog``, never
the reverse, and only this module imports the registries to fill the cache.
:func:`fit_error` is ``ddm.catalog``'s on the snapshot that :func:`load` gives.
"""

from __future__ import annotations

import sys
from typing import Any

from ddm import catalog

__all__ = ["load", "fit_error"]


def _live() -> dict[str, Any]:
    # Names and labels: they validate params.yaml, and a job sees what they change through its
    # resolved config (a rule param); the report, which prints labels, imports ddm.registry
    # itself. So this import is no code of a job's own (ddm.codedeps).
    from ddm.registry import snapshot  # codedeps: names only

    return snapshot()


def load() -> dict[str, Any]:
    """The registries' snapshot: live when torch is imported, else the cached one (written on a miss)."""
    if "torch" in sys.modules:
        return _live()
    snap = catalog.cached()
    if snap is None:
        snap = _live()
        catalog.store(snap)
    return snap


def fit_error(sampler: str, grid: str, process: str, ht: str | None = None,
              final_step: str = "paper") -> str | None:
    """``ddm.catalog.fit_error`` on :func:`load`'s snapshot."""
    return catalog.fit_error(sampler, grid, process, ht, final_step, cat=load())

