"""DVC's view of the pipeline against real DVC and real Snakemake.

dvc.yaml is generated from workflow/phases.yaml by workflow/make_dvc_yaml.py: one stage per phase,
each running Snakemake on the phase's target rule (through workflow/snakemake.sh). These tests use
the session's one tiny run (conftest ``tiny_run``): `snakemake all` in a temporary git + DVC
repository holding a copy of the workflow, the ddm package (a dependency of every stage; it is
also the code that runs there, through PYTHONPATH), the project's .gitignore/.dvcignore and the
tiny params -- the README's first command, followed by DVC (the mixed use):

* the stage graph (`dvc dag`) is the chain of phases;
* after `snakemake all`, DVC knows every product is current (dvc.lock written by the Snakefile's
  onsuccess): `dvc status` has nothing to do;
* `dvc repro -f` from a shell whose PATH lacks the virtual environment runs every stage's command
  (Snakemake through workflow/snakemake.sh), each finds nothing to do, and no product changes;
  without any Snakemake the stage fails at once with one line saying what to do;
* `dvc exp run -S ht=linear` then retrains only the configurations that use `ht` and rewrites no
  product of the others (by mtimes);
* the graph agreement: dvc.yaml is what the generator writes, `all` names every product, every job
  of Snakemake's graph belongs to exactly one phase (by its rule), writes under that phase's outs
  and reads under its deps or outs, and each phase target requests exactly its phase's jobs; a
  params.yaml key that changes a phase's jobs is listed for that phase (or reaches it through a
  dependency), or `dvc repro` would never run them.

Snakemake's job graph is read from the JOB_INFO events of a forced dry run through Snakemake's
Python API (the documented interface of logger plugins: rule_name, input, output of every job).
`--detailed-summary` is not used: its input column is read from the metadata of earlier runs, not
from the graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, copy_run, make_workdir, merge_params, run_tool, tiny_params, tool_env
from test_checksums import flip_torch

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "workflow"))
import make_dvc_yaml  # noqa: E402

PHASES_FILE = REPO / "workflow" / "phases.yaml"
#: The chain the paper's pipeline must have: (upstream, downstream) stage pairs.
CHAIN = [("download", "reference"), ("download", "train"), ("train", "sample"),
         ("sample", "evaluate"), ("reference", "evaluate"), ("evaluate", "stats"),
         ("stats", "tables")]
#: Paths Snakemake writes that nothing tracks: git must ignore them.
UNTRACKED_WRITES = ["logs/train/x.log", "results/checkpoints/x/ckpt.pt", ".snakemake/x", "data/raw/x"]
#: The folders of the pipeline's products (and its logs, one per job).
PRODUCT_FOLDERS = ("data", "results", "reports", "logs")
REPRO_TIMEOUT = 1200
EXP_TIMEOUT = 1200
#: A PATH without this interpreter's folder (the venv): what a plain shell has.
PLAIN_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())


def load_phases() -> dict:
    with open(PHASES_FILE) as f:
        return yaml.safe_load(f)


def under(path: str, roots) -> bool:
    path = path.rstrip("/")
    return any(path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/") for r in roots)


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    r.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    r.output = r.stdout + r.stderr  # type: ignore[attr-defined]
    return r


def check(r: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{what} failed (rc={r.returncode}):\n{r.output[-6000:]}"
    return r


def mtimes(root: Path, *folders: str) -> dict[str, int]:
    out = {}
    for folder in folders:
        for p in (root / folder).rglob("*"):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = p.stat().st_mtime_ns
    return out


def digests(root: Path, *folders: str) -> dict[str, str]:
    return {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in mtimes(root, *folders)}


def cached_single_files(work: Path) -> set[str]:
    """The outputs of dvc.yaml that are single files in DVC's cache: DVC re-links them (a new
    mtime) after their stage runs. None of them may feed a job: see test_relinked_outputs_are_leaves."""
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    return {path for st in stages.values() for kind in ("outs", "metrics", "plots") for o in st.get(kind, [])
            for path, opts in (o.items() if isinstance(o, dict) else [(o, {})])
            if (opts or {}).get("cache", True) and (work / path).is_file()}


def needs_dvc_repo(work: Path) -> None:
    if not (work / ".dvc").is_dir():
        pytest.skip("git is not installed: the tiny run is not a DVC repository")


def up_to_date(work: Path) -> str:
    """`dvc status` there; fails the test unless it reports nothing to do."""
    out = run_tool(work, "dvc", "status").output
    assert "Data and pipelines are up to date" in out, f"dvc status after `snakemake all`:\n{out[-4000:]}"
    return out


# --------------------------------------------------------------------------- Snakemake's graph
#: Runs in a workdir: a forced dry run of the targets; writes [{rule, input, output}] as JSON.
JOBS_SCRIPT = r'''
import json, logging, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings
from snakemake_interface_logger_plugins.common import LogEvent


class Jobs(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.jobs = []

    def emit(self, record):
        if getattr(record, "event", None) == LogEvent.JOB_INFO:
            self.jobs.append({"rule": record.rule_name, "input": [str(f) for f in record.input or []],
                              "output": [str(f) for f in record.output or []]})


out, targets = sys.argv[1], sys.argv[2:]
handler = Jobs()
with SnakemakeApi(OutputSettings()) as api:
    logging.getLogger("snakemake").addHandler(handler)
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
                            snakefile=Path("Snakefile"), workdir=Path.cwd())
    workflow.dag(DAGSettings(targets=set(targets), forceall=True)).execute_workflow(executor="dryrun")
Path(out).write_text(json.dumps(handler.jobs))
'''


def graph_jobs(workdir: Path, *targets: str) -> list[dict]:
    """Every job of Snakemake's graph for the targets (forced dry run): rule, input, output."""
    script = workdir / ".jobs.py"
    script.write_text(JOBS_SCRIPT)
    out = workdir / ".jobs.json"
    out.unlink(missing_ok=True)
    check(run([sys.executable, str(script), str(out), *targets], workdir,
              tool_env(PYTHONPATH=str(REPO))), f"snakemake dry run of {targets} in {workdir}")
    jobs = json.loads(out.read_text())
    assert jobs, "no JOB_INFO events: has Snakemake's logging interface changed?"
    # The package's data files (ddm/data/published.csv) are read where ddm is installed: in the
    # repository that is ddm/, a DVC dependency of every stage, so name them as the repository does.
    package = REPO / "ddm"
    for j in jobs:
        j["input"] = [str(Path(f).relative_to(REPO)) if Path(f).is_absolute() and Path(f).is_relative_to(package)
                      else f for f in j["input"]]
    for j in jobs:
        odd = [f for f in j["input"] + j["output"] if " (" in f]
        assert not odd, f"annotated (temp/pipe/storage) files are not supported by this check: {odd}"
    return jobs


def job_id(job: dict) -> tuple:
    return job["rule"], tuple(sorted(job["output"]))


def graph_problems(phases: dict, all_jobs: list[dict], target_jobs: list[dict]) -> list[str]:
    """What breaks the agreement between phases.yaml and Snakemake's graph (empty: none)."""
    problems = []
    phase_of = {}
    for name, p in phases.items():
        for rule in p["rules"]:
            if rule in phase_of:
                problems.append(f"rule {rule} is in two phases: {phase_of[rule]} and {name}")
            phase_of[rule] = name

    jobs = [j for j in all_jobs if j["rule"] != "all"]
    by_phase: dict[str, list[dict]] = {name: [] for name in phases}
    for j in jobs:
        name = phase_of.get(j["rule"])
        if name is None:
            problems.append(f"rule {j['rule']} (job {j['output']}) is in no phase of workflow/phases.yaml")
            continue
        p = phases[name]
        by_phase[name].append(j)
        bad_out = [f for f in j["output"] if not under(f, p["outs"])]
        if bad_out:
            problems.append(f"{name}: rule {j['rule']} writes {bad_out}, outside the phase's outs {p['outs']}")
        bad_in = [f for f in j["input"] if not under(f, p["deps"] + p["outs"])]
        if bad_in:
            problems.append(f"{name}: rule {j['rule']} reads {bad_in}, outside the phase's deps {p['deps']} "
                            f"and outs {p['outs']}")

    # Each phase target requests exactly its phase's jobs: only their outputs, and every one of them
    # (directly, or through a job of the same phase that reads its output).
    targets = {j["rule"]: j for j in target_jobs if j["rule"].startswith("phase_")}
    for name in phases:
        target = targets.get(f"phase_{name}")
        if target is None:
            problems.append(f"no target rule phase_{name} in Snakemake's graph")
            continue
        requested = set(target["input"])
        own = by_phase[name]
        produced = {f for j in own for f in j["output"]}
        if requested - produced:
            problems.append(f"phase_{name} requests {sorted(requested - produced)}, which no job of the "
                            f"phase writes for `all`")
        needed = {job_id(j) for j in own if requested & set(j["output"])}
        grown = True
        while grown:
            wanted = {f for j in own if job_id(j) in needed for f in j["input"]}
            more = {job_id(j) for j in own if wanted & set(j["output"])} - needed
            needed |= more
            grown = bool(more)
        missing = sorted(str(k) for k in {job_id(j) for j in own} - needed)
        if missing:
            problems.append(f"phase_{name} does not request these jobs of its phase: {missing}")
    extra = {job_id(j) for j in target_jobs if not j["rule"].startswith("phase_")} - {job_id(j) for j in jobs}
    if extra:
        problems.append(f"the phase targets build jobs that `all` does not: {sorted(map(str, extra))}")
    return problems


def everything_on(params: dict) -> dict:
    """The tiny params with every top-level switch on (ablations, long NFE, solver study, ...),
    and sets of 70 samples in 2 shards (sample_shard), those of 20 in one (sample)."""
    on = merge_params(params, {k: True for k, v in params.items() if isinstance(v, bool)})
    return merge_params(on, {"presets.embedded.digits.shard_size": 50})


def untriggered(phases: dict, key: str, base: list[dict], changed: list[dict]) -> list[str]:
    """Phases whose jobs change with params key `key` although DVC would not rerun their stage.

    DVC reruns a stage when one of its params changed, or when one of its deps changed: a file
    written by an added or changed job of a stage that reran. A phase whose jobs change while
    neither holds never runs those jobs under `dvc repro`/`dvc exp run -S key=...`."""
    old = {tuple(sorted(j["output"])): j for j in base}
    fresh: set[str] = set()
    problems = []
    for name, p in phases.items():
        delta = [j for j in changed if j["rule"] in p["rules"]
                 and ((b := old.get(tuple(sorted(j["output"])))) is None or b["rule"] != j["rule"]
                      or sorted(b["input"]) != sorted(j["input"]))]
        if not delta:
            continue
        if key not in p["params"] and not any(under(f, p["deps"]) for f in fresh):
            problems.append(f"{name}: {len(delta)} job(s) change with `{key}` (e.g. {delta[0]['rule']} -> "
                            f"{delta[0]['output']}), but `{key}` is not in the phase's params and none of its "
                            f"deps change: add it to workflow/phases.yaml {name}.params")
        fresh |= {f for j in delta for f in j["output"]}
    return problems


# --------------------------------------------------------------------------- the DVC repository
def test_dvc_dag_is_the_chain_of_phases(tiny_run):
    needs_dvc_repo(tiny_run)
    r = run_tool(tiny_run, "dvc", "dag", "--dot")
    edges = set(re.findall(r'"([\w@.-]+)"\s*->\s*"([\w@.-]+)"', r.stdout))
    nodes = set(re.findall(r'^\s*"([\w@.-]+)";\s*$', r.stdout, re.M)) | {n for e in edges for n in e}
    phases = load_phases()
    assert nodes == set(phases), f"stages {sorted(nodes)} != phases {list(phases)}"
    assert set(CHAIN) <= edges, f"missing edges {sorted(set(CHAIN) - edges)}; dvc dag:\n{r.stdout}"
    # Every edge is one that phases.yaml implies (a phase's dep is another phase's out), and back.
    implied = {(up, down) for down, p in phases.items() for dep in p["deps"]
               for up, q in phases.items() if up != down and under(dep, q["outs"])}
    assert edges == implied, f"dvc dag edges {sorted(edges)} != phases.yaml's {sorted(implied)}"
    # The stages come in the phases' order (a topological order of the chain).
    order = list(phases)
    assert all(order.index(a) < order.index(b) for a, b in edges)


def test_dvcignore_excludes_bytecode(tiny_run):
    """ddm/ is a dependency of every stage: importing it must not change it for DVC."""
    needs_dvc_repo(tiny_run)
    r = run_tool(tiny_run, "dvc", "check-ignore", "ddm/__pycache__/cli.cpython-311.pyc", check=False)
    assert r.returncode == 0, (
        "DVC does not ignore ddm/__pycache__: bytecode written while a stage runs changes the `ddm` "
        "dependency of the stages that ran before it, and the next `dvc repro` runs every stage again. "
        "Commit a .dvcignore with `__pycache__/` and `*.pyc` at the repository root.\n" + r.output)


def test_gitignore_matches_dvc_outputs(tiny_run):
    """Git ignores what DVC caches or nobody tracks, and tracks the `cache: false` reports."""
    needs_dvc_repo(tiny_run)
    phases = load_phases()
    metrics = {m for p in phases.values() for m in p.get("metrics", [])}
    tracked = sorted(metrics | set(make_dvc_yaml.GIT_TRACKED)) + ["dvc.lock", "dvc.yaml", "params.yaml"]
    ignored = [f"{o}/x" for o in make_dvc_yaml.UNCACHED] + UNTRACKED_WRITES
    r = run_tool(tiny_run, "git", "check-ignore", "--no-index", *tracked, check=False)
    assert r.stdout.split() == [], (
        f"git ignores {r.stdout.split()}, which are `cache: false` in dvc.yaml: git must track them "
        "(else `dvc exp show` shows '!' for every committed experiment). Remove them from .gitignore.")
    r = run_tool(tiny_run, "git", "check-ignore", "--no-index", *ignored, check=False)
    assert sorted(r.stdout.split()) == sorted(ignored), (
        f"git does not ignore {sorted(set(ignored) - set(r.stdout.split()))}: uncached outputs and "
        "untracked files that git does not ignore are committed by every `dvc exp run`")


def test_snakemake_all_records_the_products_in_dvc_lock(tiny_run):
    """After `snakemake all` (the README's first command) DVC knows every product is current."""
    needs_dvc_repo(tiny_run)
    log = (tiny_run / ".snakemake" / "tiny-run.log").read_text()
    assert "dvc.lock records the products" in log, log[-3000:]
    lock = yaml.safe_load((tiny_run / "dvc.lock").read_text())
    assert list(lock["stages"]) == list(load_phases())
    for name, stage in lock["stages"].items():
        assert stage["outs"] and all(o.get("md5") or o.get("hash") for o in stage["outs"]), (name, stage)
    up_to_date(tiny_run)


def test_a_silently_corrupt_product_stops_snakemake_and_dvc(tiny_run_copy):
    """4 bytes flipped in a model, then in a sample set, size and mtime kept (the file rewritten as
    `rsync -t` does: a new file renamed over it, its mtime set back): Snakemake's rerun triggers
    cannot see it, and DVC would record its new hash. `snakemake all` (nothing to do) and `dvc repro`
    (whose stage of that phase runs) each stop before any job with one line naming the file and how
    to rebuild it; dvc.lock is unchanged and `dvc status` still names the change. (A flip in place,
    same inode, is not even seen by DVC, whose hash cache is keyed on inode, size and mtime: `dvc
    repro` then has nothing to do, and `snakemake all` still stops.)"""
    work = tiny_run_copy
    needs_dvc_repo(work)
    lock = (work / "dvc.lock").read_bytes()
    for product in ("results/models/digits/ddm.pt", "results/samples/digits/ddm/nfe2-r0.pt"):
        path = work / product
        st, original, fresh = path.stat(), path.read_bytes(), path.with_name(path.name + ".new")
        fresh.write_bytes(original)
        flip_torch(fresh, 4)
        os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
        fresh.replace(path)
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        for cmd in (("snakemake", "--cores", "2", "all"), ("dvc", "repro")):
            r = run_tool(work, *cmd, check=False, timeout=REPRO_TIMEOUT)
            said = [line for line in r.output.splitlines() if product in line]
            assert r.returncode != 0 and len(said) == 1, r.output[-4000:]
            assert "changed after it was written" in said[0] and "`snakemake all` rebuilds it" in said[0], said
            assert "Traceback" not in r.output and (work / "dvc.lock").read_bytes() == lock, r.output[-4000:]
        assert "Data and pipelines are up to date" not in run_tool(work, "dvc", "status").output
        # The next product's turn: this one as it was, again as a new file (DVC's own hash cache is
        # keyed on inode, size and mtime, and would keep the corrupt file's hash for the same inode).
        fresh.write_bytes(original)
        os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
        fresh.replace(path)


def test_repro_without_the_venv_on_path(tiny_run, tmp_path):
    """`.venv/bin/dvc repro` typed in a shell without the venv on PATH: the stages find Snakemake
    (workflow/snakemake.sh: .venv/bin/snakemake at the repository root); with no Snakemake at all,
    a stage fails at once with one line saying what to do. After the Snakemake run, forcing every
    stage changes no product: Snakemake, asked for each phase, agrees that all are current."""
    needs_dvc_repo(tiny_run)
    work = copy_run(tiny_run, tmp_path / "repo")
    assert shutil.which("snakemake", path=PLAIN_PATH) is None, f"a snakemake outside the venv on {PLAIN_PATH}"
    plain = {"PATH": PLAIN_PATH}
    dvc = str(BIN / "dvc")

    r = run_tool(work, dvc, "repro", "-f", "download", env=plain, check=False)
    assert r.returncode != 0
    said = [line for line in r.output.splitlines() if line.startswith("workflow/snakemake.sh: ")]
    assert len(said) == 1 and "run ./setup.sh" in said[0] and "DDM_SNAKEMAKE" in said[0], r.output[-3000:]
    assert "command not found" not in r.output

    (work / ".venv").symlink_to(BIN.parent, target_is_directory=True)  # what ./setup.sh makes
    with open(work / ".git" / "info" / "exclude", "a") as f:
        f.write("/.venv\n")
    before, contents = mtimes(work, *PRODUCT_FOLDERS[:3]), digests(work, *PRODUCT_FOLDERS[:3])
    r = run_tool(work, dvc, "repro", "-f", env=plain, timeout=REPRO_TIMEOUT)
    for name in load_phases():
        assert f"Running stage '{name}'" in r.output, f"stage {name} did not run:\n{r.output[-4000:]}"
    assert r.output.count("Nothing to be done") == len(load_phases()), r.output[-4000:]
    # Snakemake rewrote nothing. DVC itself re-links (touches) each cached single-file output
    # after its stage ran (same content, new mtime: harmless for the files that feed no job).
    relinked = cached_single_files(work)
    after = mtimes(work, *PRODUCT_FOLDERS[:3])
    assert {p: t for p, t in after.items() if p not in relinked} == \
        {p: t for p, t in before.items() if p not in relinked}, "a forced stage rewrote a current product"
    assert digests(work, *PRODUCT_FOLDERS[:3]) == contents
    up_to_date(work)
    again = run_tool(work, dvc, "repro", env=plain)
    assert "Running stage" not in again.output, again.output[-4000:]
    print(f"dvc repro -f without the venv on PATH: {r.elapsed:.0f} s")


def test_exp_run_ht_retrains_only_what_uses_ht(tiny_run, tmp_path):
    """`snakemake all`, then `dvc exp run -S ht=linear` (no commit between): only the
    configurations that use `ht` are retrained, sampled and evaluated, and no product of the
    others is rewritten (by mtimes); the experiment is recorded with its params and metrics."""
    needs_dvc_repo(tiny_run)
    params = tiny_params()
    uses_ht = {m for m, spec in params["methods"].items() if spec.get("ht") == "main"}
    assert uses_ht == {"ddm"} and not params["ablations"], "the tiny config changed: revise this test"
    assert params["ht"] != "linear"

    work = copy_run(tiny_run, tmp_path / "repo")  # keeps mtimes, .snakemake/, .git, .dvc/cache
    up_to_date(work)
    before = mtimes(work, *PRODUCT_FOLDERS)
    try:
        r = run_tool(work, "dvc", "exp", "run", "-S", "ht=linear", timeout=EXP_TIMEOUT)
    finally:
        run_tool(work, "dvc", "queue", "stop", check=False)
    after = mtimes(work, *PRODUCT_FOLDERS)
    changed = {p for p, t in after.items() if before.get(p) != t}

    def methods(prefix: str) -> set[str]:  # logs/<job>/<dataset>/<method>[/...].log
        return {Path(p).relative_to(prefix).parts[1].removesuffix(".log") for p in changed if p.startswith(prefix + "/")}

    assert methods("logs/train") == {"ddm"}, f"trained: {sorted(methods('logs/train'))}; changed: {sorted(changed)}"
    for job in ("sample", "evaluate"):
        assert methods(f"logs/{job}") == {"ddm"}, f"{job}: {sorted(methods(f'logs/{job}'))}"
        ddm_logs = {p for p in before if p.startswith(f"logs/{job}/digits/ddm/")}
        assert ddm_logs and ddm_logs <= changed, f"not every ddm {job} job reran: {sorted(ddm_logs - changed)}"
    # No product of another configuration, and nothing upstream of training, was rewritten.
    products = {p for p in changed if not p.startswith("logs/")}
    per_method = {p for p in products if re.match(r"results/(models|curves|samples|metrics)/", p)}
    assert per_method and all(re.match(r"results/\w+/digits/ddm(\.|/)", p) for p in per_method), sorted(per_method)
    assert not [p for p in products if p.startswith(("data/", "results/fid/"))], sorted(products)
    assert {p for p in products if p.startswith("reports/figures/samples_")} == \
        {p for p in before if p.startswith("reports/figures/samples_digits_ddm_")}

    import torch
    model = torch.load(work / "results/models/digits/ddm.pt", map_location="cpu", weights_only=True)
    assert model["cfg"]["method"]["ht"] == "linear"

    # The experiment is recorded with its params and metrics, and without the pipeline's data.
    shown = json.loads(run_tool(work, "dvc", "exp", "show", "--json").stdout)
    exps = [rev for base in shown for e in base.get("experiments") or [] for rev in e.get("revs", [])]
    linear = [e for e in exps
              if (e.get("data") or {}).get("params", {}).get("params.yaml", {}).get("data", {}).get("ht") == "linear"]
    assert linear, f"no experiment with ht=linear in dvc exp show: {[e.get('name') for e in exps]}"
    metrics = linear[0]["data"].get("metrics", {}).get("reports/metrics.json", {})
    assert metrics.get("data"), f"the experiment's metrics are missing from its commit: {metrics}"
    files = run_tool(work, "git", "ls-tree", "-r", "--name-only", linear[0]["rev"]).stdout.split()
    assert not [f for f in files if under(f, ["data", "results", "logs"])], "pipeline data committed by dvc exp"
    print(f"dvc exp run -S ht=linear: {r.elapsed:.0f} s")


# --------------------------------------------------------------------------- graph agreement
def test_dvc_yaml_is_generated_from_phases():
    r = run([sys.executable, str(REPO / "workflow" / "make_dvc_yaml.py"), "--check"], REPO, tool_env())
    assert r.returncode == 0, f"dvc.yaml is out of date: run `python workflow/make_dvc_yaml.py`\n{r.output}"
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    phases = load_phases()
    assert list(dvc_yaml["stages"]) == list(phases)
    for name, stage in dvc_yaml["stages"].items():
        assert stage["cmd"].split() == [*make_dvc_yaml.SNAKEMAKE.split(), "--cores", "all", f"phase_{name}",
                                        f"${make_dvc_yaml.ARGS_VAR}"]
        assert "workflow/snakemake.sh" in {next(iter(d)) if isinstance(d, dict) else d for d in stage["deps"]}
        assert all(next(iter(o.values())).get("persist") for o in
                   stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []))


def test_every_rule_is_in_exactly_one_phase(workdir_factory):
    work = workdir_factory()
    r = check(run([str(BIN / "snakemake"), "--list-rules"], work, tool_env(PYTHONPATH=str(REPO))),
              "snakemake --list-rules")
    rules = {line.split()[0] for line in r.stdout.splitlines() if re.match(r"^\w+", line)}
    phases = load_phases()
    listed = [rule for p in phases.values() for rule in p["rules"]]
    targets = {f"phase_{name}" for name in phases}
    assert len(listed) == len(set(listed)), f"a rule is in two phases: {listed}"
    assert set(listed) <= rules, f"phases.yaml names unknown rules {sorted(set(listed) - rules)}"
    assert targets <= rules, f"missing phase targets {sorted(targets - rules)}"
    orphans = rules - set(listed) - targets - {"all"}
    assert not orphans, f"rules in no phase of workflow/phases.yaml: {sorted(orphans)}"


@pytest.fixture(scope="module")
def graph_of(tmp_path_factory):
    """graph_of(params, *targets): the jobs of Snakemake's graph on a workdir with these params
    (the tiny params with them merged in); cached for the module."""
    cache: dict[str, list[dict]] = {}

    def graph(params: dict, *targets: str) -> list[dict]:
        key = json.dumps([params, targets], sort_keys=True, default=str)
        if key not in cache:
            work = make_workdir(tmp_path_factory.mktemp("graph"), params)
            cache[key] = graph_jobs(work, *targets)
        return cache[key]

    return graph


@pytest.mark.parametrize("variant", ["tiny", "everything-on"])
def test_snakemake_graph_agrees_with_phases(graph_of, variant):
    params = tiny_params() if variant == "tiny" else everything_on(tiny_params())
    all_jobs = graph_of(params, "all")
    target_jobs = graph_of(params, *(f"phase_{name}" for name in load_phases()))
    problems = graph_problems(load_phases(), all_jobs, target_jobs)
    assert not problems, "\n".join(problems)
    assert {j["rule"] for j in all_jobs} >= {"train", "sample", "evaluate", "stats", "report"}
    # `all` names every product: a file deleted after a complete run is rebuilt by `snakemake all`
    # (Snakemake does not rebuild a missing file that only feeds complete ones), as DVC reports it.
    requested = set(next(j["input"] for j in all_jobs if j["rule"] == "all"))
    produced = {f for j in all_jobs if j["rule"] != "all" for f in j["output"]}
    assert produced == requested, (f"`all` does not name {sorted(produced - requested)} (add them to "
                                   f"phase_outputs in workflow/rules/common.smk); names unmade {sorted(requested - produced)}")
    if variant == "everything-on":  # every rule of a phase has a job in `all`'s graph
        idle = [r for p in load_phases().values() for r in p["rules"] if r not in {j["rule"] for j in all_jobs}]
        assert not idle, (f"rules with no job in `all`'s graph with every switch on: {idle}: list their outputs "
                          "in phase_outputs (workflow/rules/common.smk), and switch them on in everything_on()")


def test_relinked_outputs_are_leaves(tiny_run, graph_of):
    """DVC touches a cached single-file output after its stage runs (`dvc repro`, `dvc exp run`):
    if a job read it, Snakemake would see that job's outputs as stale and rerun them."""
    relinked = cached_single_files(tiny_run)
    read = {f for j in graph_of(tiny_params(), "all") if j["rule"] != "all" for f in j["input"]}
    assert not relinked & read, (f"{sorted(relinked & read)} are inputs of jobs: make them `cache: false` "
                                 "(workflow/make_dvc_yaml.py) or give them a folder of their own")


def test_params_that_change_a_phase_reach_its_stage(graph_of):
    """Each top-level switch turned on, and a new entry in each method table: the phases whose jobs
    change must rerun under DVC (the key is in their params, or one of their deps changes)."""
    phases = load_phases()
    tiny = tiny_params()
    on = everything_on(tiny)
    cases = [(k, tiny, {k: True}) for k, v in tiny.items() if isinstance(v, bool) and not v]
    for k, v in on.items():
        if k != "presets" and isinstance(v, dict) and v and all(isinstance(e, dict) for e in v.values()):
            first = next(iter(v))
            cases.append((k, on, {k: {"zz_copy": {**v[first]}}}))
    cases.append(("presets", tiny, {"presets.embedded.digits.shard_size": 50}))  # sets of 70 in 2 shards
    assert {"ablations", "methods"} <= {k for k, _, _ in cases}
    problems = []
    for key, base, change in cases:
        problems += untriggered(phases, key, graph_of(base, "all"), graph_of(merge_params(base, change), "all"))
    assert not problems, "\n".join(problems)
