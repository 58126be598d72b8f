"""The installed ddm package is self-contained, and it declares what it imports.

* A wheel built from the repository (pyproject.toml's package-data: ``templates/*``, ``data/*``)
  holds every module of ddm/ and its data files: the params.yaml schema, the published results
  of Table 1 and the tables' template.
* Installed without dependencies into a fresh target folder and run from another working
  directory (``PYTHONPATH=<target>``, this interpreter), ``ddm`` is imported from the target, not
  the repository; it finds its data files there through importlib.resources
  (``ddm.resources``: ``SCHEMA_PATH``, ``PUBLISHED_CSV``, ``TABLES_TEMPLATE``), ``python -m ddm
  --help`` works, and ``python -m ddm prepare`` + ``train`` on the tiny config write a model.
* pyproject.toml's dependencies are exactly the distributions ddm/ imports.

The shape of ddm/ (import loops, module and function lengths) is tests/test_import_graph.py's.

The wheel is built from a copy of the sources (pyproject.toml, README.md, ddm/) in a temporary
folder, so the build leaves no build/ folder in the repository.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, TINY_PARAMS

#: What a wheel of ddm is built from (pyproject.toml names README.md as the readme).
SOURCES = ("pyproject.toml", "README.md", "ddm")
#: The package's data files, relative to the package folder.
DATA_FILES = ("data/params.schema.yaml", "data/published.csv", "data/throughput.yaml", "templates/tables.tex.j2",
              "templates/claims.tex.j2")
#: Seconds for one pip or ddm subprocess (a loaded 2-core machine).
TIMEOUT = 600


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    r = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    """A wheel of the repository's ddm, installed with --no-deps into <tmp>/site."""
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    src.mkdir()
    for rel in SOURCES:
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / rel, src / rel)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(root / "wheel"), str(src),
         cwd=root)
    wheels = sorted((root / "wheel").glob("ddm-*.whl"))
    assert len(wheels) == 1, f"expected one ddm wheel in {root / 'wheel'}, got {wheels}"
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(root / "site"), str(wheels[0]), cwd=root)
    return SimpleNamespace(wheel=wheels[0], site=(root / "site").resolve())


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """This interpreter with only ``site`` added to its path (PYTHONPATH), in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_wheel_holds_every_module_and_the_data_files(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "ddm").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    data = {f"ddm/{f}" for f in DATA_FILES}
    assert data <= names, f"package data missing from the wheel: {sorted(data - names)} (pyproject.toml package-data)"


#: Run by the installed package: where ddm and its data files are, and that they load.
CHECK = """
import csv, json, yaml
import ddm, ddm.cli, ddm.validation, ddm.report.tables
from ddm.resources import PUBLISHED_CSV, SCHEMA_PATH, TABLES_TEMPLATE

with PUBLISHED_CSV.open(newline="") as f:
    rows = list(csv.DictReader(f))
parsed = ddm.cli.build_parser().parse_args(["report", "--metrics", "m.json", "--out", "t.tex"])
print(json.dumps({
    "ddm": ddm.__file__,
    "files": [str(p) for p in (SCHEMA_PATH, PUBLISHED_CSV, TABLES_TEMPLATE)],
    "same_names": ddm.validation.SCHEMA_PATH is SCHEMA_PATH and ddm.report.tables.PUBLISHED_CSV is PUBLISHED_CSV,
    "schema": yaml.safe_load(SCHEMA_PATH.read_text())["$schema"],
    "valid": sorted(ddm.validation.load_params("params.yaml")["methods"]),
    "published_rows": len(rows),
    "published_columns": sorted(rows[0]),
    "template": ddm.report.tables.template_env().get_template(TABLES_TEMPLATE.name).name,
    "report_default": str(ddm.report.tables.check_published_csv(parsed.published)),  # no --published: the package's
}))
"""


def test_installed_package_finds_its_data_files(installed, tmp_path):
    shutil.copy(TINY_PARAMS, tmp_path / "params.yaml")
    r = run_installed(installed.site, tmp_path, "-c", CHECK)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    ddm_file = Path(got["ddm"]).resolve()
    assert ddm_file.is_relative_to(installed.site), f"ddm imported from {ddm_file}, not from {installed.site}"
    assert not ddm_file.is_relative_to(REPO)
    for f in got["files"]:
        assert Path(f).resolve().is_relative_to(installed.site / "ddm") and Path(f).is_file(), f
    assert got["same_names"]
    assert got["schema"].startswith("https://json-schema.org/")
    assert got["valid"] == ["ddm", "ddpm", "sde"]  # the tiny config passed the installed schema
    assert got["published_rows"] > 0
    assert {"table", "dataset", "method", "params", "nfe", "value"} <= set(got["published_columns"])
    assert got["template"] == "tables.tex.j2"
    assert Path(got["report_default"]) == Path(got["files"][1])  # `ddm report --published` default


def test_installed_cli_help_and_a_few_training_steps(installed, tmp_path):
    r = run_installed(installed.site, tmp_path, "-m", "ddm", "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "train" in r.stdout
    shutil.copy(TINY_PARAMS, tmp_path / "params.yaml")  # digits: 6 steps of an 8x8 U-Net
    r = run_installed(installed.site, tmp_path, "-m", "ddm", "prepare", "--dataset", "digits", "--out", "digits.pt")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_installed(installed.site, tmp_path, "-m", "ddm", "train", "--dataset", "digits", "--method", "ddm",
                      "--data", "digits.pt", "--out", "models/ddm.pt", "--checkpoints", "ckpt", "--device", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    model = tmp_path / "models" / "ddm.pt"
    assert model.is_file() and model.stat().st_size > 0


# --------------------------------------------------------------------------- dependencies
def _distribution(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as one -."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level name of every module ddm/ imports that is neither ddm nor the standard library
    (module level, in functions, and ``__import__("name")``) -> the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in (REPO / "ddm").rglob("*.py") if "__pycache__" not in p.parts):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("ddm", "__future__"):
                    found.setdefault(top, set()).add(path.relative_to(REPO / "ddm").as_posix())
    return found


#: Modules of ddm/ that may import the ``pipeline`` extra (they run beside Snakemake, never in a job).
PIPELINE_ONLY = {"plan.py", "plangraph.py"}


def test_dependencies_are_exactly_the_third_party_imports():
    """pyproject.toml's ``dependencies`` name each distribution ddm/ imports, and no other; a module
    that only a command beside the pipeline imports (``python -m ddm.plan``: Snakemake's own DAG)
    may come from the ``pipeline`` extra instead."""
    import re
    from importlib.metadata import packages_distributions

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda d: _distribution(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])  # noqa: E731
    declared = {name(d) for d in project["dependencies"]}
    pipeline = {name(d) for d in project["optional-dependencies"]["pipeline"]}
    dists = packages_distributions()
    imported: dict[str, set[str]] = {}
    for module, files in _third_party_imports().items():
        assert module in dists, f"{module} (imported by {sorted(files)}) is not installed: which distribution is it?"
        for dist in dists[module]:
            imported.setdefault(_distribution(dist), set()).update(files)
    missing = {d: sorted(f) for d, f in imported.items()
               if d not in declared and not (d in pipeline and set(f) <= PIPELINE_ONLY)}
    unused = sorted(declared - set(imported))
    assert not missing, f"imported by ddm/ but not in pyproject.toml's dependencies: {missing}"
    assert not unused, f"in pyproject.toml's dependencies but not imported by ddm/: {unused}"
