"""Code is an input of the graph (ddm.codedeps): each rule's jobs rerun when the package code its
`ddm` subcommand runs changes, and only then; DVC's view (dvc.yaml's per-phase code deps) agrees.

Unit tests on a small package of our own (import forms, handler-level precision of cli.py,
docstring and comment edits, data files), the wiring of every rule, and one end-to-end check on
a copy of the tiny run: a one-line change to a module that `ddm sample` runs and `ddm train` does
not makes `snakemake -n all` schedule the sample jobs and not the train jobs, `dvc status` name
the same phase, and `snakemake all` leave both tools saying up to date.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, dry_run_jobs, run_tool
from ddm import codecache, codedeps
from ddm.codedeps import code_digest, command_files, command_modules, commands

sys.path.insert(0, str(REPO / "workflow"))
import make_dvc_yaml  # noqa: E402


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "ddm"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


CLI = '''\
    """The command."""
    from ddm.io import save


    def _helper():
        from ddm import alpha
        return alpha.f()


    def cmd_a(args):
        """Runs alpha through a helper."""
        return _helper()


    def cmd_b(args):
        from .beta import g  # relative, function-level
        return g()


    def build(sub):
        add_command(sub, "a", cmd_a, "a")
        add_command(sub, "b", cmd_b, "b")
'''


@pytest.fixture
def pkg(tmp_path) -> Path:
    return _package(tmp_path, {
        "__init__.py": '"""pkg"""\n',
        "cli.py": CLI,
        "io.py": "def save():\n    pass\n",
        "alpha.py": "def f():\n    from ddm.gamma import h  # function-level\n    return h()\n",
        "beta.py": ("from typing import TYPE_CHECKING\nfrom ddm import delta  # codedeps: names only\n"
                    "if TYPE_CHECKING:\n    from ddm.alpha import f\n\ndef g():\n    from ddm.gamma import h\n    return h()\n"),
        "delta.py": "NAMES = ['x']\n",
        "sub/__init__.py": "X = 1\n",
        "sub/leaf.py": "def leaf():\n    return 1\n",
        "gamma.py": "from ddm.resources import TEMPLATE\n\ndef h():\n    return TEMPLATE\n",
        "resources.py": 'from importlib.resources import files\nDATA = files("ddm") / "data"\nTEMPLATE = DATA / "t.txt"\n',
        "data/t.txt": "template v1\n",
    })


def test_each_subcommand_runs_its_handlers_imports_transitively(pkg):
    assert commands(pkg) == ["a", "b"]
    assert command_modules("a", pkg) == ["ddm", "ddm.alpha", "ddm.cli", "ddm.gamma", "ddm.io", "ddm.resources"]
    # not counted: imports under `if TYPE_CHECKING:` (they never run) and lines marked names-only
    assert command_modules("b", pkg) == ["ddm", "ddm.beta", "ddm.cli", "ddm.gamma", "ddm.io", "ddm.resources"]
    assert "ddm/data/t.txt" in command_files("a", pkg)  # gamma names resources.TEMPLATE


def test_a_subpackages_init_runs_with_its_modules(pkg):
    cli = pkg / "cli.py"
    cli.write_text(cli.read_text().replace("from .beta import g  # relative, function-level",
                                           "from .beta import g  # relative, function-level\n    from ddm.sub.leaf import leaf"))
    assert {"ddm.sub", "ddm.sub.leaf"} <= set(command_modules("b", pkg))
    assert "ddm/sub/__init__.py" in command_files("b", pkg)


def test_digest_ignores_docstrings_comments_and_blank_lines(pkg):
    before = {c: code_digest(c, pkg) for c in ("a", "b")}
    alpha = pkg / "alpha.py"
    alpha.write_text('"""A docstring."""\n# a comment\n\n' + alpha.read_text() + "\n\n# end\n")
    cli = pkg / "cli.py"
    cli.write_text(cli.read_text().replace('"""Runs alpha through a helper."""', '"""Runs alpha (reworded)."""'))
    assert {c: code_digest(c, pkg) for c in ("a", "b")} == before


def test_digest_follows_code_of_the_modules_and_handlers_a_command_runs(pkg):
    before = {c: code_digest(c, pkg) for c in ("a", "b")}
    gamma = pkg / "gamma.py"
    gamma.write_text(gamma.read_text() + "X = 1\n")
    after = {c: code_digest(c, pkg) for c in ("a", "b")}
    assert after["a"] != before["a"] and after["b"] != before["b"]  # both reach gamma
    cli = pkg / "cli.py"
    cli.write_text(cli.read_text().replace("return _helper()", "return _helper() or 0"))
    again = {c: code_digest(c, pkg) for c in ("a", "b")}
    assert again["a"] != after["a"] and again["b"] == after["b"]  # cmd_b's part of cli.py is unchanged
    (pkg / "data" / "t.txt").write_text("template v2\n")
    assert code_digest("a", pkg) != again["a"]


#: A second cli module (as ddm/cli_tasks.py): a handler with a module-level import of its own and
#: a cli.py helper, and the function that registers it (run by every subcommand, as the parser is).
CLI_TASKS = '''\
    """Task commands."""
    from ddm.epsilon import E  # the task handler's own, at module level
    from ddm.cli import _helper


    def cmd_t(args):
        return E, _helper()


    def add_tasks(sub):
        add_command(sub, "t", cmd_t, "t")
'''


def test_a_cli_modules_handler_counts_its_module_level_imports_and_other_commands_do_not(pkg):
    (pkg / "epsilon.py").write_text("E = 1\n")
    (pkg / "cli_tasks.py").write_text(textwrap.dedent(CLI_TASKS))
    cli = pkg / "cli.py"
    cli.write_text(cli.read_text().replace("from ddm.io import save", "from ddm.io import save\nfrom ddm.cli_tasks import add_tasks")
                   + "\n\ndef main():\n    add_tasks(None)\n")
    assert codedeps.cli_modules(codedeps._load(pkg)[1]) == ["ddm.cli", "ddm.cli_tasks"]
    assert commands(pkg) == ["a", "b", "t"]
    # t: its module's import, and cli.py's helper it calls (with what that runs)
    assert command_modules("t", pkg) == ["ddm", "ddm.alpha", "ddm.cli", "ddm.cli_tasks", "ddm.epsilon", "ddm.gamma",
                                         "ddm.io", "ddm.resources"]
    assert "ddm.epsilon" not in command_modules("b", pkg)  # cli_tasks' parts b runs (add_tasks) do not name E
    before = {c: code_digest(c, pkg) for c in ("a", "b", "t")}
    tasks = pkg / "cli_tasks.py"
    tasks.write_text(tasks.read_text().replace("return E, _helper()", "return E, _helper(), 0"))
    after = {c: code_digest(c, pkg) for c in ("a", "b", "t")}
    assert after["t"] != before["t"] and (after["a"], after["b"]) == (before["a"], before["b"])
    tasks.write_text(tasks.read_text().replace("from ddm.epsilon import E", "from ddm.epsilon import E as E"))
    again = {c: code_digest(c, pkg) for c in ("a", "b", "t")}
    assert again["t"] != after["t"] and (again["a"], again["b"]) == (after["a"], after["b"])
    tasks.write_text(tasks.read_text().replace('"t", cmd_t, "t")', '"t", cmd_t, "the t")'))
    assert code_digest("a", pkg) != again["a"]  # the parser every subcommand builds changed


def test_the_real_cli_modules_are_read_part_by_part():
    """No other module imports a cli module (else it would run whole); a task handler's
    module-level imports count for it and not for a Table 1 command."""
    _, modules, trees, lines = codedeps._load(REPO / "ddm")
    clis = set(codedeps.cli_modules(modules))
    edges = {m: codedeps._imports(t, m, modules, modules[m].name == "__init__.py", lines[m]) for m, t in trees.items()}
    assert {"ddm.cli", "ddm.cli_base", "ddm.cli_tasks"} <= clis
    assert not {m for m, e in edges.items() if e & clis and m not in clis | {"ddm.__main__"}}
    parts = codedeps._cli_parts("task-figure", modules, trees)["ddm.cli_tasks"]
    own = [n for n in parts if isinstance(n, codedeps.ast.ImportFrom) and n.module == "ddm.contracts"]
    assert own, "cmd_task_figure reads its samples with ddm.contracts.load_images, imported at module level"
    assert not [n for n in codedeps._cli_parts("refstats", modules, trees)["ddm.cli_tasks"] if n in own]
    assert "ddm.fit" in command_modules("train-task", REPO / "ddm")
    assert "ddm.fit" not in command_modules("sample-task", REPO / "ddm")


def test_a_function_level_import_counts_when_its_function_can_run(tmp_path):
    """The rule of command_modules: a module's module-level imports count once it is imported; a
    function's imports count when code that runs names the function; a class counts whole."""
    register = re.search(r"(\w+)\(sub, \"a\"", CLI).group(1)  # how the cli modules register a subcommand
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "cli.py": ('def cmd_a(args):\n    from ddm.tasks import split\n    return split()\n\n\n'
                   'def cmd_b(args):\n    from ddm import tasks\n    return tasks.fit()\n\n\n'
                   f'def build(sub):\n    {register}(sub, "a", cmd_a, "a")\n    {register}(sub, "b", cmd_b, "b")\n'),
        "tasks.py": ("from ddm import shapes\n\n\ndef split():\n    return shapes.S\n\n\n"
                     "def fit():\n    from ddm.trainer import train\n    return train()\n\n\n"
                     "class Model:\n    def step(self):\n        from ddm.opt import adam\n        return adam\n"),
        "shapes.py": "S = 1\n", "trainer.py": "def train():\n    return 2\n", "opt.py": "adam = 3\n",
    })
    assert command_modules("a", pkg) == ["ddm", "ddm.cli", "ddm.opt", "ddm.shapes", "ddm.tasks"]
    assert command_modules("b", pkg) == ["ddm", "ddm.cli", "ddm.opt", "ddm.shapes", "ddm.tasks", "ddm.trainer"]
    before = code_digest("a", pkg)
    (pkg / "trainer.py").write_text("def train():\n    return 3\n")
    assert code_digest("a", pkg) == before


def test_unknown_subcommand_names_the_known_ones(pkg):
    with pytest.raises(KeyError, match="`ddm c` is not a subcommand.*known: a, b"):
        command_modules("c", pkg)


def test_cached_digests_equal_fresh_ones_and_follow_edits(pkg, tmp_path):
    cache = tmp_path / "cache"
    first = codecache.cached_code_digests(pkg, cache)
    assert first == codedeps.code_digests(pkg) and len(list(cache.iterdir())) == 1
    assert codecache.cached_code_digests(pkg, cache) == first
    (pkg / "io.py").write_text("def save():\n    return 2\n")
    assert codecache.cached_code_digests(pkg, cache) != first


def test_a_shared_cache_serves_every_working_directory_of_the_same_package(pkg, tmp_path, monkeypatch):
    """The run's own folder first, then the machine's (keyed by content, so a second working
    directory of the same bytes parses nothing); an entry found in the shared folder is copied to
    the run's; an edit is a new key in both."""
    own, other, shared = tmp_path / "run1", tmp_path / "run2", tmp_path / "shared"
    first = codecache.cached_code_digests(pkg, own, shared)
    assert [p.name for p in own.iterdir()] == [p.name for p in shared.iterdir()]
    monkeypatch.setattr(codecache, "code_digests", lambda root: pytest.fail("parsed again"))
    assert codecache.cached_code_digests(pkg, other, shared) == first and len(list(other.iterdir())) == 1
    monkeypatch.undo()
    (pkg / "io.py").write_text("def save():\n    return 3\n")
    assert codecache.cached_code_digests(pkg, other, shared) == codedeps.code_digests(pkg) != first
    assert len(list(shared.iterdir())) == 2
    monkeypatch.setenv("DDM_CACHE_DIR", str(tmp_path / "c"))
    assert codecache.shared_cache() == tmp_path / "c" / "code-digests"


def test_a_same_size_edit_with_its_mtime_restored_is_seen(pkg, tmp_path):
    """`touch -r` (rsync -t, archive tools) restores an mtime; the cache is keyed on content."""
    cache, gamma = tmp_path / "cache", pkg / "gamma.py"
    first = codecache.cached_code_digests(pkg, cache)
    st = gamma.stat()
    gamma.write_text(gamma.read_text().replace("return TEMPLATE", "return TEMPLATA"))
    os.utime(gamma, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert gamma.stat().st_size == st.st_size and gamma.stat().st_mtime_ns == st.st_mtime_ns
    again = codecache.cached_code_digests(pkg, cache)
    assert again == codedeps.code_digests(pkg) and again["a"] != first["a"] and again["b"] != first["b"]


def test_the_package_a_job_runs_is_the_working_directorys_when_it_holds_one(pkg, tmp_path):
    assert codedeps.package_dir(pkg.parent) == pkg.resolve()
    assert codedeps.package_dir(tmp_path / "elsewhere") == Path(codedeps.__file__).resolve().parent


# --------------------------------------------------------------------------- the real graph
def _rule_blocks() -> dict[str, str]:
    blocks = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(), flags=re.M)
        blocks.update(dict(zip(parts[1::2], parts[2::2])))
    return blocks


def test_every_rule_that_runs_ddm_has_its_subcommands_code_as_a_param():
    phases = make_dvc_yaml.load_phases()
    mapped = {rule: cmd for p in phases.values() for rule, cmd in p["rules"].items()}
    known = set(commands(REPO / "ddm"))
    runs = {}
    for rule, block in _rule_blocks().items():
        shell = re.search(r"\{params\.ddm\} ([a-z0-9-]+)", block)
        if shell:
            runs[rule] = shell.group(1)
            assert f'code=code_of("{rule}")' in block, f"rule {rule} runs `ddm {shell.group(1)}` but has no code param"
    assert runs == mapped, "workflow/phases.yaml's rules must map each rule to the subcommand its shell runs"
    assert set(mapped.values()) <= known


def test_dvc_code_deps_are_the_files_of_each_phases_subcommands():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, phase in make_dvc_yaml.load_phases().items():
        files = {f for cmd in phase["rules"].values() for f in command_files(cmd, REPO / "ddm")}
        deps = {d for d in stages[name]["deps"] if d.startswith("ddm/")}
        assert deps == files, name
        assert "ddm" not in stages[name]["deps"]  # not the whole package: a sampler fix keeps training


#: The samplers (Alg. 2 / Eq. 11): `ddm sample` runs them and `ddm train` does not (checked below,
#: so the test says so when the package's import graph changes).
SAMPLE_ONLY = "ddm/sampling.py"


def _stale_stages(work: Path) -> set[str]:
    out = run_tool(work, "dvc", "status", "--json").stdout
    return set(json.loads(out or "{}"))


@pytest.mark.slow
def test_a_code_change_reruns_the_jobs_that_run_it(tiny_run_copy):
    work = tiny_run_copy
    if not (work / ".dvc").is_dir() or not (work / "ddm").is_dir():
        pytest.skip("git is not installed: the tiny run is not a DVC repository with its own ddm")
    assert SAMPLE_ONLY in command_files("sample", work / "ddm")
    assert SAMPLE_ONLY not in command_files("train", work / "ddm")
    module = work / SAMPLE_ONLY
    text = module.read_text()

    comment = "\n# a comment only: nothing reruns\n"
    module.write_text(text + comment)
    r = run_tool(work, "snakemake", "-n", "--cores", "2", "all")
    assert [rule for rule, _ in dry_run_jobs(r.output) if rule != "all"] == [], r.output[-3000:]

    # A same-size code edit with its mtime restored (touch -r, rsync -t): the digests' cache is
    # keyed on the files' content (ddm.codecache), so the sample jobs rerun.
    st = module.stat()
    module.write_text(text + "\n" + "SAMPLE_ONLY_CHANGE = 1".ljust(len(comment) - 2) + "\n")
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (module.stat().st_size, module.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    r = run_tool(work, "snakemake", "-n", "--cores", "2", "all")
    rules = {rule for rule, _ in dry_run_jobs(r.output)}
    assert "sample" in rules and {"evaluate", "stats", "report"} <= rules, r.output[-3000:]
    assert "sample_task" in rules, sorted(rules)  # the conditioned tasks' samplers are the same code
    assert not rules & {"train", "train_task", "train_autoencoder", "prepare", "extractor", "refstats"}, sorted(rules)
    stale = _stale_stages(work)
    assert "sample" in stale and "train" not in stale and "download" not in stale, stale

    # A trainer edit reruns the trainings and what follows, never a prepare or prepare_task job:
    # those import the task module but call none of its training helpers (ddm.codedeps' rule).
    sampled = module.read_text()
    module.write_text(text)
    trainer = work / Path(inspect.getsourcefile(importlib.import_module("ddm.training").train)).relative_to(REPO)
    trainer_text = trainer.read_text()
    trainer.write_text(trainer_text + "\nTRAINER_CHANGE = 1\n")
    rules = {rule for rule, _ in dry_run_jobs(run_tool(work, "snakemake", "-n", "--cores", "2", "all").output)}
    assert {"train", "train_task"} <= rules and not rules & {"prepare", "prepare_task"}, sorted(rules)
    assert "download" not in _stale_stages(work)
    trainer.write_text(trainer_text)
    module.write_text(sampled)

    # Rerun one set (its sample and evaluate jobs, not the whole graph: the CI budget): the new
    # digest is recorded with its jobs, so that set is done and every other set is still due.
    target = "results/metrics/digits/ddm/nfe2-r0.json"
    run_tool(work, "snakemake", "--cores", "2", target, timeout=600)
    r = run_tool(work, "snakemake", "-n", "--cores", "2", target)
    assert dry_run_jobs(r.output) == [], r.output[-3000:]
    r = run_tool(work, "snakemake", "-n", "--cores", "2", "all")
    due = {(w.get("method"), w.get("nfe"), w.get("repeat")) for rule, w in dry_run_jobs(r.output) if rule == "sample"}
    assert ("ddm", "2", "0") not in due and ("ddm", "2", "1") in due, sorted(due)


def test_every_package_data_file_has_a_name_in_resources():
    """ddm.codedeps finds the data files a subcommand reads by their ddm/resources.py names; a file
    without one would be in no digest, and its edits would rerun nothing."""
    import ddm.resources

    named = {Path(str(getattr(ddm.resources, n))).resolve() for n in ddm.resources.__all__}
    files = {p.resolve() for folder in ("data", "templates") for p in (REPO / "ddm" / folder).rglob("*") if p.is_file()}
    assert files <= named, f"no ddm/resources.py name: {sorted(str(p) for p in files - named)}"
    read = {f for c in commands(REPO / "ddm") for f in command_files(c, REPO / "ddm") if not f.endswith(".py")}
    assert {"ddm/templates/tables.tex.j2", "ddm/templates/claims.tex.j2", "ddm/data/published.csv"} <= read


def test_the_published_rows_and_the_table_templates_count_for_the_report_alone():
    """Every subcommand builds the whole parser, `ddm compare`'s option defaults included: that
    import reads names only, so an added published row, a template or a claim criterion reruns
    the report job and leaves training, sampling and scoring as they are."""
    reported = {"ddm/data/published.csv", "ddm/templates/tables.tex.j2", "ddm/templates/claims.tex.j2"}
    for command in ("prepare", "extractor", "refstats", "train", "sample", "evaluate", "stats", "prepare-task",
                    "train-task", "sample-task", "evaluate-task"):
        files = set(command_files(command, REPO / "ddm"))
        assert not files & reported and "ddm/claims.py" not in files, (command, sorted(files & reported))
    assert reported <= set(command_files("report", REPO / "ddm"))
    assert "ddm/compare.py" in command_files("compare", REPO / "ddm")
