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
* ``init_dvc_repo(workdir)`` / ``dvc_env(workdir)`` / ``run_tool(workdir, *cmd)``: make a
  workdir (made with ``extra=DVC_FILES``) a git + DVC repository; the environment for git, DVC
  and Snakemake there; run a command there with it.

Fixtures:

* ``tiny_run`` (session): ONE completed ``snakemake --cores 2 all`` on the tiny config, made
  once per test session and shared by every end-to-end test (tests/test_pipeline.py,
  test_dvc.py, test_slurm.py); returns its directory. The directory is a git + DVC repository
  (``init_dvc_repo``: the workflow, dvc.yaml and the ddm package committed) when git is
  installed, so the run is also the README's mixed use: ``snakemake all`` records the products in
  dvc.lock (the Snakefile's ``onsuccess``). Treat it as read-only: tests that change files or
  params use ``tiny_run_copy`` (or ``copy_run``). ``DDM_TEST_TINY_RUN=<dir>`` reuses a completed
  run in ``<dir>`` (a developer shortcut: it is brought up to date with ``snakemake all`` first).
* ``tiny_run_copy`` (function): a private copy of ``tiny_run`` (files, mtimes, Snakemake's
  ``.snakemake/`` metadata, git and DVC state), so a dry run there sees exactly the state of the
  completed run.
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
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "tests" / "fixtures" / "params-tiny.yaml"
#: The folder holding this interpreter's console scripts (``ddm``, ``snakemake``).
BIN = Path(sys.executable).parent
#: Cores for every real Snakemake run in the tests (the CI machines have 2 shared cores).
CORES = "2"
#: Wall-clock limit of the one full tiny run (measured: 1.5 min idle, 5 min on a loaded machine).
TINY_RUN_TIMEOUT = 1800

#: What a workdir gets from the repository (a missing entry is skipped; see make_workdir's extra).
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "reports/report.tex.j2")

#: What a git + DVC repository of the pipeline holds besides the workflow (make_workdir's extra):
#: dvc.yaml, the ddm package (a dependency of every stage) and the project's ignore files.
DVC_FILES = ("dvc.yaml", "ddm", ".gitignore", ".dvcignore")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}

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
    # A machine without SLURM unless a test says otherwise (tests/test_slurm.py has its own
    # environment): Snakemake imports its SLURM executor plugin at start, and the plugin asks
    # `scontrol show config` for a default; with SLURM installed but no controller up (CI
    # before and after the SLURM tests) that call waits for its 10 s timeout in every Snakemake
    # start, DVC stage and job. An empty configuration makes scontrol fail at once.
    env["SLURM_CONF"] = os.devnull
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


def copy_run(src: Path, dst: Path, *, ignore: Iterable[str] = ()) -> Path:
    """A copy of a run folder with mtimes and Snakemake metadata (so its DAG state is the same),
    and its git and DVC state; ``ignore``: more glob patterns of names to leave out."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", *ignore))
    return dst


def dvc_env(workdir: Path) -> dict:
    """The environment for git, DVC and Snakemake in a DVC repository made by ``init_dvc_repo``:
    this interpreter's tools first on PATH, no analytics, a git identity, and the repository's own
    ddm package on PYTHONPATH (the ddm that runs is the ddm that DVC hashes as a dependency)."""
    return tool_env(DVC_NO_ANALYTICS="1", PYTHONPATH=str(workdir), **GIT_IDENTITY)


def run_tool(workdir: Path, *cmd: str, timeout: float = 300, env: Mapping[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """``cmd`` in ``workdir`` with ``dvc_env(workdir)`` (+ ``env``); a bare ``dvc``/``snakemake``
    is this interpreter's. With ``check``, a non-zero exit fails the test with its output."""
    program = str(BIN / cmd[0]) if cmd[0] in ("dvc", "snakemake") else cmd[0]
    r = _run([program, *cmd[1:]], Path(workdir), timeout, {**dvc_env(workdir), **(env or {})})
    if check and r.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (rc={r.returncode}) in {workdir}:\n{r.output[-6000:]}",
                    pytrace=False)
    return r


def init_dvc_repo(workdir: Path) -> Path:
    """Make ``workdir`` (from ``make_workdir(..., extra=DVC_FILES)``) a git repository whose first
    commit holds the workflow, then a DVC repository (``dvc init``, the project's .dvc/config),
    committed: the state of a fresh clone of the project."""
    for args in (("init", "-q"), ("config", "user.name", "test"), ("config", "user.email", "test@example.org"),
                 ("add", "-A"), ("commit", "-q", "-m", "workflow")):
        run_tool(workdir, "git", *args)
    run_tool(workdir, "dvc", "init", "-q")
    if (REPO / ".dvc" / "config").is_file():
        shutil.copy2(REPO / ".dvc" / "config", Path(workdir) / ".dvc" / "config")
    run_tool(workdir, "git", "add", "-A")
    run_tool(workdir, "git", "commit", "-q", "-m", "dvc init")
    return Path(workdir)


# --------------------------------------------------------------------------- order
#: Test files in the order they start; every other file runs between FIRST and LAST, in collection
#: order. Under pytest-xdist (``--dist loadfile --no-loadscope-reorder``, pyproject.toml) one
#: worker makes the shared tiny run at once while the other runs the unit tests, and the
#: end-to-end files that continue the tiny run come last, the SLURM ones (which wait on status
#: polls half of their time) first among them.
FIRST = ("test_conditioned_pipeline.py",)
LAST = ("test_slurm.py", "test_report_pdf.py", "test_dvc.py", "test_pipeline.py", "test_table1.py")


def pytest_configure(config):
    """Under pytest-xdist, each worker's own torch ops take its share of the cores (so the
    workers together ask for no more intra-op threads than there are cores); what the tests start
    (Snakemake, ddm) keeps its own thread settings. Before any test: the one-machine SLURM's
    configs that a killed session left behind are removed (tests/slurm_cluster.py)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # once, in the controlling process
        from slurm_cluster import remove_stale_configs

        remove_stale_configs()  # a killed session's slurm.conf would stall every snakemake by 9 s
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_runtest_logreport(report):
    """``DDM_TEST_TIMELINE=<file>``: one JSON line per test phase (worker, test, phase, start and
    stop times), appended by the controlling process: which worker ran what when, to balance the
    suite's two workers (docs/measurements.md, "CI")."""
    path = os.environ.get("DDM_TEST_TIMELINE")
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller sees every worker's reports
        import json

        node = getattr(report, "node", None)
        worker = getattr(getattr(node, "gateway", None), "id", "main")
        with open(path, "a") as f:
            f.write(json.dumps({"worker": worker, "test": report.nodeid, "phase": report.when,
                                "start": report.start, "stop": report.stop}) + "\n")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> tuple[int, int]:
        name = item.path.name
        if name in FIRST:
            return (0, FIRST.index(name))
        return (2, LAST.index(name)) if name in LAST else (1, 0)

    items.sort(key=rank)  # stable: the tests of a file keep their order


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One completed tiny run of the whole graph, in a git + DVC repository, shared by the
    session (read-only). Under pytest-xdist the workers share it: the first to need it makes it
    under a file lock in the session's common temporary folder, the others wait and reuse it."""
    reuse = os.environ.get("DDM_TEST_TINY_RUN")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder that holds every worker's basetemp
    work = Path(reuse) if reuse else root / "tiny-run" / "repo"
    session = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
    marker = work / ".snakemake" / "tiny-run.session"
    work.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(work.parent / "tiny-run.lock")):
        if marker.is_file() and marker.read_text() == session:
            return work  # made (or brought up to date) by another worker of this session
        if not (work / "Snakefile").exists():
            with_dvc = shutil.which("git") is not None
            make_workdir(work, extra=DVC_FILES if with_dvc else ())
            if with_dvc:
                init_dvc_repo(work)
        r = run_snakemake(work, "--cores", CORES, "all", timeout=TINY_RUN_TIMEOUT, env=dvc_env(work))
        if r.returncode != 0:
            pytest.fail(f"the tiny run failed (rc={r.returncode}) in {work}:\n{r.output[-6000:]}", pytrace=False)
        # for whoever debugs a test: the run's time and output, where git and DVC do not look
        (work / ".snakemake" / "tiny-run.log").write_text(f"{r.elapsed:.1f} s\n{r.output}")
        marker.write_text(session)
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
