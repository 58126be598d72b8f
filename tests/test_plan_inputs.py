"""Bad input to the plan before submitting (``python -m ddm.plan``): every case is one line
``python -m ddm.plan: <message>`` naming the option or file (and line), exit code 2, no traceback,
and nothing written; the checks run before Snakemake builds its graph, so each case takes
milliseconds. The paper preset with each switch passes the same checks (its plan itself is
tests/test_plan.py's). The table runs ``ddm.plan.main(argv)`` in the work folder; one case runs
the real ``python -m ddm.plan``."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_workdir
from ddm import plan

#: (files to write in the work folder, the planner's arguments, what its one line must hold)
CASES = {
    "unknown-preset": ({}, ["--config", "preset=nope"], ("--config: preset: 'nope' is not defined", "paper")),
    "negative-shard-size": ({"runs/neg.yaml": "presets:\n  embedded:\n    digits:\n      shard_size: -5\n"},
                            ["--configfile", "runs/neg.yaml"],
                            ("runs/neg.yaml:4: presets/embedded/digits/shard_size: -5",)),
    "overlay-syntax-error": ({"runs/syn.yaml": "seed: 1\nnfe: [1\nht: linear\n"}, ["--configfile", "runs/syn.yaml"],
                             ("runs/syn.yaml:3:", "YAML syntax error")),
    "overlay-is-a-list": ({"runs/list.yaml": "- ht: linear\n"}, ["--configfile", "runs/list.yaml"],
                          ("runs/list.yaml is a list, not a mapping",)),
    "overlay-is-empty": ({"runs/empty.yaml": ""}, ["--configfile", "runs/empty.yaml"], ("runs/empty.yaml is empty",)),
    "overlay-missing": ({}, ["--configfile", "runs/none.yaml"], ("--configfile runs/none.yaml: no such file",)),
    "overlay-duplicate-key": ({"runs/dup.yaml": "ht: linear\nht: exp\n"}, ["--configfile", "runs/dup.yaml"],
                              ("runs/dup.yaml:2:", "duplicate key 'ht'")),
    "config-without-value": ({}, ["--config", "ablations"], ("--config ablations:", "name=value")),
    "config-one-letter-key": ({}, ["--config", "x=1"], ("--config x=1:", "at least 2 characters")),
    "bad-plugin": ({"broken.py": "raise RuntimeError('no GPU here')\n"}, ["--config", "plugins=['broken.py']"],
                   ("plugins: 'broken.py'", "RuntimeError: no GPU here")),
    "exiting-plugin": ({"quits.py": "import sys\nsys.exit(0)\n"}, ["--config", "plugins=['quits.py']"],
                       ("plugins: 'quits.py'", "sys.exit(0)")),
    "table-missing": ({}, ["--table", "none.yaml"], ("--table none.yaml: no such file",)),
    "table-syntax-error": ({"t.yaml": "devices: {cpu: [1}\n"}, ["--table", "t.yaml"], ("t.yaml:1:", "YAML syntax error")),
    "table-not-a-table": ({"t.yaml": "- 1\n"}, ["--table", "t.yaml"], ("--table t.yaml: not a throughput table",)),
    "profile-missing": ({}, ["--profile", "nope/config.yaml"], ("--profile nope/config.yaml: no such file",)),
    "json-under-a-file": ({}, ["--json", "params.yaml/plan.json"], ("--json params.yaml/plan.json",)),
    "directory-without-workflow": ({}, ["--directory", "runs"], ("--directory runs: no Snakefile",)),
    **{f"paper-{switch}-bad-value": ({}, ["--config", "preset=paper", f"{switch}=maybe"], (f"--config: {switch}",))
       for switch in ("ablations", "solver_study", "long_nfe", "conditioned", "replicates")},
}

#: The switches of the paper preset, each of which the input checks must let through.
PAPER_SWITCHES = ("ablations=True", "solver_study=True", "long_nfe=True", "conditioned=True", "replicates=3")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = make_workdir(tmp_path_factory.mktemp("plan-inputs"), extra=("slurm",))
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text())  # with the paper preset
    (work / "runs").mkdir()
    return work


def run_plan_main(work: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """``ddm.plan.main(argv)`` in ``work``: its exit code and captured stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = plan.main(argv)
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(saved)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(work, case):
    files, argv, needles = CASES[case]
    for name, text in files.items():
        (work / name).write_text(text)
    before = sorted(p.name for p in work.rglob("*"))
    r = run_plan_main(work, argv)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and not r.stdout, (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith("python -m ddm.plan: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert sorted(p.name for p in work.rglob("*") if "__pycache__" not in p.parts) == \
        sorted(n for n in before if n != "__pycache__")


@pytest.mark.parametrize("switch", PAPER_SWITCHES)
def test_the_paper_preset_with_each_switch_passes_the_input_checks(work, switch):
    params = plan.merged_config(work, plan.parse_overrides(["preset=paper", switch]))
    key, value = switch.split("=")
    assert params["preset"] == "paper" and str(params[key]) == value


def test_the_real_command_gives_the_same_line(work):
    (work / "runs/syn.yaml").write_text("seed: 1\nnfe: [1\nht: linear\n")
    r = subprocess.run([sys.executable, "-m", "ddm.plan", "--configfile", "runs/syn.yaml"], cwd=work,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("python -m ddm.plan: runs/syn.yaml:3:"), r.stderr
