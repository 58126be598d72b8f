"""Shared fixtures and helpers for the tests that run the real pipeline.

Helpers (importable as ``from conftest import make_workdir, run_snakemake, run_ddm``):

* ``make_workdir(path, params_overrides=None, *, extra=())``: copy ``Snakefile``, ``workflow/``
  and the workflow profile ``profiles/`` (and the repository-relative paths in ``extra``, e.g.
  ``"dvc.yaml"`` or ``"slurm"``) into
  ``path`` and write ``params.yaml`` there: the tiny test config
  (``tests/fixtures/params-tiny.yaml``) with ``params_overrides`` merged in. Overrides are a
  nested dict merged key by key (``{"presets": {"embedded": {"digits": {"nfe": [2]}}}}``) and/or
  dotted keys (``{"presets.embedded.digits.nfe": [2]}``); the value ``DELETE`` removes a key.
* ``run_snakemake(workdir, *args, timeout=...)`` / ``run_ddm(workdir, *args, ...)``: run the
  ``snakemake`` / ``ddm`` of this interpreter's environment in ``workdir`` and return the
  ``subprocess.CompletedProcess`` (text, stdout and stderr captured, never raises on failure).
* ``dry_run_jobs(output)``: the jobs of a ``snakemake -n`` output as ``(rule, wildcards)`` pairs.

Fixtures:

* ``tiny_run`` (session): ONE completed ``snakemake --cores 2 all`` on the tiny config, made
  once per test session; returns its directory. Treat it as read-only: tests that change files
  or params use ``tiny_run_copy``. ``DDM_TEST_TINY_RUN=<dir>`` reuses a completed run in
  ``<dir>`` (a developer shortcut: it is brought up to date with ``snakemake all`` first).
* ``tiny_run_copy`` (function): a private copy of ``tiny_run`` (files, mtimes and Snakemake's
  ``.snakemake/`` metadata), so a dry run there sees exactly the state of the completed run.
* ``workdir_factory`` (function): ``workdir_factory(params_overrides=None, *, extra=())`` makes
  a fresh workdir under this test's ``tmp_path`` (one call -> one new subfolder).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "tests" / "fixtures" / "params-tiny.yaml"
#: The folder holding this interpreter's console scripts (``ddm``, ``snakemake``).
BIN = Path(sys.executable).parent
#: Cores for every real Snakemake run in the tests (the CI machines have 2 shared cores).
CORES = "2"
#: Wall-clock limit of the one full tiny run (measured: 1.5 min idle, 5 min on a loaded machine).
TINY_RUN_TIMEOUT = 1800

#: What a workdir gets from the repository (a missing entry is skipped; see make_workdir's extra).
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles")

DELETE = object()


# --------------------------------------------------------------------------- helpers
def tiny_params() -> dict:
    with open(TINY_PARAMS) as f:
        return yaml.safe_load(f)


def merge_params(params: dict, overrides: Mapping[str, Any] | None) -> dict:
    """A deep copy of ``params`` with ``overrides`` merged in (nested dicts and/or dotted keys)."""
    out = copy.deepcopy(params)
    for key, value in (overrides or {}).items():
        path = key.split(".")
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        last = path[-1]
        if value is DELETE:
            node.pop(last, None)
        elif isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = merge_params(node[last], value)
        else:
            node[last] = copy.deepcopy(value)
    return out


def write_params(workdir: Path, params: Mapping) -> Path:
    path = Path(workdir) / "params.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(dict(params), f, sort_keys=False)
    return path


def make_workdir(tmp_path: Path, params_overrides: Mapping[str, Any] | None = None, *,
                 extra: Iterable[str] = ()) -> Path:
    """Copy the workflow into ``tmp_path`` with the tiny params (+ overrides); return it."""
    work = Path(tmp_path)
    work.mkdir(parents=True, exist_ok=True)
    for rel in (*WORKFLOW_FILES, *extra):
        src = REPO / rel
        if not src.exists():
            if rel in WORKFLOW_FILES:
                continue
            raise FileNotFoundError(f"make_workdir: {src} does not exist")
        if src.is_dir():
            shutil.copytree(src, work / rel, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    write_params(work, merge_params(tiny_params(), params_overrides))
    return work


def tool_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def _run(cmd: list[str], workdir: Path, timeout: float, env: Mapping[str, str] | None) -> subprocess.CompletedProcess:
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=workdir, env=tool_env(**(env or {})), capture_output=True, text=True,
                       timeout=timeout)
    r.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    r.ended = time.time()  # type: ignore[attr-defined]
    r.output = r.stdout + r.stderr  # type: ignore[attr-defined]
    return r


def run_snakemake(workdir: Path, *args: str, timeout: float = 600,
                  env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``snakemake <args>`` in ``workdir``; ``.elapsed`` (s), ``.ended`` (epoch s) and
    ``.output`` (stdout+stderr) added."""
    return _run([str(BIN / "snakemake"), *args], Path(workdir), timeout, env)


def run_ddm(workdir: Path, *args: str, timeout: float = 300,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``ddm <args>`` in ``workdir``; ``.elapsed`` (s) and ``.output`` (stdout+stderr) added."""
    return _run([str(BIN / "ddm"), *args], Path(workdir), timeout, env)


_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


def dry_run_jobs(output: str) -> list[tuple[str, dict]]:
    """``(rule, {wildcard: value})`` of each job block printed by ``snakemake -n``."""
    jobs: list[tuple[str, dict]] = []
    for line in output.splitlines():
        m = _RULE.match(line)
        if m:
            jobs.append((m.group(1), {}))
            continue
        w = _WILDCARDS.match(line)
        if w and jobs:
            for item in w.group(1).split(", "):
                k, _, v = item.partition("=")
                jobs[-1][1][k.strip()] = v.strip()
    return jobs


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run folder with mtimes and Snakemake metadata (so its DAG state is the same)."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One completed tiny run of the whole graph, shared by the session (read-only)."""
    reuse = os.environ.get("DDM_TEST_TINY_RUN")
    if reuse:
        work = Path(reuse)
        if not (work / "Snakefile").exists():
            make_workdir(work)
    else:
        work = make_workdir(tmp_path_factory.mktemp("tiny-run"))
    r = run_snakemake(work, "--cores", CORES, "all", timeout=TINY_RUN_TIMEOUT)
    if r.returncode != 0:
        pytest.fail(f"the tiny run failed (rc={r.returncode}) in {work}:\n{r.output[-6000:]}", pytrace=False)
    (work / ".tiny-run-seconds").write_text(f"{r.elapsed:.1f}\n")
    return work


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    return copy_run(tiny_run, tmp_path / "run")


@pytest.fixture
def workdir_factory(tmp_path):
    counter = iter(range(10_000))

    def factory(params_overrides: Mapping[str, Any] | None = None, *, extra: Iterable[str] = ()) -> Path:
        return make_workdir(tmp_path / f"work{next(counter)}", params_overrides, extra=extra)

    return factory
