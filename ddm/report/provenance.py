"""Where the numbers come from: the git commit (and whether the work tree differed), a hash of the
resolved params, when the metrics were computed and the versions of the packages they depend on
(``provenance``: reports/metrics.json), and that record as LaTeX-safe lines for the tables and the
PDF report (``provenance_text``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

from ddm.io import utc_timestamp
from ddm.report.labels import latex_escape

__all__ = ["PROVENANCE_PACKAGES", "PIPELINE_TRACKED", "git_state", "params_hash", "package_versions", "provenance",
           "provenance_text"]


#: The packages whose versions every table names (the numbers depend on them).
PROVENANCE_PACKAGES = ("torch", "snakemake", "dvc", "torch-fidelity")
#: Tracked paths the pipeline writes itself (its reports, DVC's lock file): changes there do not
#: make the numbers differ from what the commit's code and config give, so they are not "dirty".
PIPELINE_TRACKED = ("reports", "dvc.lock")


def git_state(folder: str | Path = ".") -> dict:
    """``{"commit": HEAD's sha or None, "dirty": tracked changes outside PIPELINE_TRACKED}``
    (as ``git describe --dirty``; both None outside a git repository or without git)."""
    import os
    import subprocess

    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never take the index lock

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout if r.returncode == 0 else None

    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                 *(f":(top,exclude){p}" for p in PIPELINE_TRACKED))
    return {"commit": head.strip(), "dirty": None if status is None else bool(status.strip())}


def params_hash(params: Mapping, pairs: Iterable[tuple[str, str]], task_pairs: Iterable[tuple[str, str]] = ()) -> str:
    """Short sha256 of what the numbers depend on in params.yaml: the preset's dataset blocks
    and the resolved config (training and sampling) of every measured (dataset, method); with
    ``task_pairs`` (the conditioned tasks), also every measured (task, method)'s resolved config."""
    import hashlib

    from ddm.config import ConfigError, resolve, resolve_task

    def resolved(how, d: str, m: str) -> dict | None:  # None: params.yaml does not describe this pair
        try:
            return how(params, d, m)
        except ConfigError:
            return None

    blob = {"preset": params["presets"][params["preset"]],
            "methods": {f"{d}/{m}": resolved(resolve, d, m) for d, m in sorted(set(pairs))}}
    if task_pairs:  # only then: the hash of a run without conditioned tasks stays what it was
        blob["tasks"] = {f"{t}/{m}": resolved(resolve_task, t, m) for t, m in sorted(set(task_pairs))}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(paths: Iterable[Path], params: Mapping, folder: str | Path = ".", task_paths: Iterable[Path] = ()) -> dict:
    """Where the numbers of reports/metrics.json come from: git commit (and whether the work
    tree differed from it), hash of the resolved params, when the FIDs were computed (the metric
    files' ``computed_at``, else their modification time: both set by ``ddm evaluate``, never
    the clock of this call) and the versions of PROVENANCE_PACKAGES. ``task_paths``: the files of
    ``ddm evaluate-task`` (Tables 2 and 3), counted in the dates and the params hash."""
    stamps, pairs, task_pairs = [], [], []
    for p in sorted(Path(p) for p in [*paths, *task_paths]):
        with open(p) as f:
            r = json.load(f)
        stamps.append(r.get("computed_at") or utc_timestamp(p.stat().st_mtime))
        if "dataset" in r:
            pairs.append((r["dataset"], r["method"]))
        elif "method" in r:  # a task's reference.json names no method
            task_pairs.append((r["task"], r["method"]))
    git = git_state(folder)
    return {"git_commit": git["commit"], "git_dirty": git["dirty"], "params_hash": params_hash(params, pairs, task_pairs),
            "computed_first": min(stamps, default=None), "computed_last": max(stamps, default=None),
            "versions": package_versions()}


def provenance_text(prov: Mapping | None) -> dict | None:
    """The provenance of metrics.json as two LaTeX-safe lines: ``comment`` (full commit, for a
    ``%`` comment) and ``caption`` (short, for a caption's last line); None when absent."""
    if not prov:
        return None
    commit = prov["git_commit"] or "unknown (not a git repository)"
    dirty = ", dirty" if prov["git_dirty"] else ""
    first, last = prov["computed_first"] or "unknown", prov["computed_last"] or "unknown"
    when = last if first == last else f"{first} to {last}"
    names = [n for n in PROVENANCE_PACKAGES if n in prov["versions"]] + sorted(set(prov["versions"]) - set(PROVENANCE_PACKAGES))
    versions = ", ".join(f"{n} {prov['versions'][n]}" for n in names)
    comment = f"commit {commit}{dirty}; params {prov['params_hash']}; computed {when}; {versions}"
    short = (prov["git_commit"] or "unknown")[:12]
    day = last[:10] if first[:10] == last[:10] else f"{first[:10]} to {last[:10]}"
    caption = f"Provenance: commit {short}{dirty}, params {prov['params_hash']}, computed {day}; {versions}."
    return {"comment": " ".join(comment.split()), "caption": latex_escape(caption)}
