# What several rule files, or the Snakefile, share. The job list of each phase, derived from
# params.yaml through ddm.config (the same resolution `ddm` itself uses), the `ddm` command and the
# code param of each rule. A function that one rule file alone uses lives in the file of the same
# name in workflow/rules/helpers/, which that rule file includes (`snakemake --lint` wants no
# functions beside rules).
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from ddm.config import ConfigError, dataset_names, model_of, resolve  # config validated in the Snakefile
from ddm.config import convergence_methods as config_convergence_methods
from ddm.config import TASKS, resolve_task, task_names, task_sets
from ddm.codecache import cached_code_digests, shared_cache
from ddm.codedeps import package_dir
from ddm.plugins import with_code
from ddm.io import save_text
from ddm.verified import first_corrupt
from ddm.yamlio import read_yaml
from ddm.replicates import replicate_count, replicate_name, replicated_methods, split_replicate
from ddm.roles import fid_ablations, fig3_methods, table_rows
from ddm.shards import set_shard_size, shard_count


def _uses_conda():
    try:
        from snakemake_interface_executor_plugins.settings import DeploymentMethod

        return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    except (ImportError, AttributeError):
        return False


#: The `ddm` command: run by the interpreter that runs Snakemake (no activated venv needed), or
#: by the rule's conda environment (workflow/envs/ddm.yaml) under --use-conda. Rules take it as
#: a param, so a different interpreter path reruns nothing else.
DDM = "python -m ddm" if _uses_conda() else f"{shlex.quote(sys.executable)} -m ddm"


def params_for_jobs(cfg):
    """The params file the jobs' `ddm` commands read (they take it from $DDM_PARAMS): params.yaml
    when this run's config is params.yaml's, else the merged config of --config / --configfile,
    written once to .snakemake/ddm-params/<digest>.yaml. So `snakemake all --config ht=linear`
    trains h_t = linear, as the rules' params (the rerun triggers) say."""
    if cfg == read_yaml("params.yaml"):
        return str(Path("params.yaml").resolve())
    text = yaml.safe_dump(cfg, sort_keys=True)
    path = Path(".snakemake/ddm-params") / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not (path.is_file() and path.read_text() == text):
        save_text(text, path)
    return str(path.resolve())


# set (not read: `envvars:` is for variables a workflow needs from outside); every job inherits it
os.environ.update(DDM_PARAMS=params_for_jobs(config))

PRESET = config["presets"][config["preset"]]
DATASETS = dataset_names(config)
TABLE1 = list(config["methods"])
# the ablations by role (ddm/roles.py), never by name: those sampled for FID (Tables 4, 5) and Fig. 3's models
ABLATIONS = fid_ablations(config) if config["ablations"] else []
FIG3 = fig3_methods(config) if config["ablations"] else []
SOLVERS = list(config["solver_methods"]) if config["solver_study"] else []
try:  # the rows of Tables 4 and 5 (the stats rule's param): a role that makes no row fails here
    TABLE_ROWS = json.dumps(table_rows(config), sort_keys=True)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

with open(workflow.source_path("../phases.yaml")) as _f:
    PHASES = yaml.safe_load(_f)

#: rule -> the `ddm` subcommand it runs (workflow/phases.yaml)
RULE_COMMANDS = {rule: command for p in PHASES.values() for rule, command in p["rules"].items()}
#: subcommand -> digest of the package code it runs (ddm.codedeps), of the package the jobs'
#: `python -m ddm` imports here (./ddm when the working directory holds one), and of the plug-in files
#: (ddm.plugins: a changed plug-in reruns every job)
CODE = with_code(cached_code_digests(package_dir(), ".snakemake/ddm-code", shared_cache()))


def code_of(rule):
    """The `code` param of each rule that runs `ddm`, the digest of the package modules its subcommand
    imports (function-level imports too) and of the package data files they name; docstrings,
    comments and blank lines do not count. Snakemake reruns a job whose params changed, so a fixed
    sampler reruns the sample jobs and what reads their samples, and leaves the rest. DVC's view
    agrees: each stage depends on the files of its rules' subcommands (workflow/make_dvc_yaml.py)."""
    try:
        return CODE[RULE_COMMANDS[rule]]
    except KeyError:
        raise WorkflowError(f"no `ddm` subcommand for the rule {rule} in workflow/phases.yaml (map it under its "
                            "phase's rules to its subcommand), or no such subcommand in ddm/cli*.py") from None

# Conditioned generation (Tables 2 and 3; workflow/rules/tasks.smk), when `conditioned: true`: the
# tasks, the methods and the (NFE, repeat) sample sets of each (task, method). The rules are defined
# either way (their outputs name the sets of the preset's conditioned block, or a placeholder).
TASK_NAMES = task_names(config)
TASK_METHODS = list(config.get("conditioned_methods") or {}) if TASK_NAMES else []
_COND = (config.get("conditioned_presets") or {}).get(config["preset"])
TASK_SETS = task_sets(_COND) if _COND else [(1, 0)]
TASK_RULE_METHODS = list(config.get("conditioned_methods") or {}) or ["ddm"]


wildcard_constraints:
    dataset="[a-z0-9]+",
    task="|".join(TASKS),
    method="[a-z][a-z0-9_]*(-s[1-9][0-9]*)?",  # a method of params.yaml, or a training-seed replicate (ddm.replicates)
    nfe=r"\d+",
    repeat=r"\d+",
    shard=r"\d+",


def sample_jobs():
    """(dataset, method, nfe, repeat) of every sample set the tables need."""
    jobs = []
    for ds in DATASETS:
        b = PRESET[ds]
        for m in TABLE1:
            jobs += [(ds, m, n, r) for n in b["nfe"] for r in range(b["fid"]["repeats"])]
            if config["long_nfe"]:
                jobs += [(ds, m, n, 0) for n in b["nfe_long"]]
        for m in ABLATIONS:
            jobs += [(ds, m, n, 0) for n in b["ablation_nfe"]]
        # an ablation network in the plateau check: the repeated sets of its cell at the check's NFEs (the std)
        for m in [m for m in convergence_methods(ds) if m in ABLATIONS + FIG3 and m not in TABLE1]:
            jobs += [(ds, m, n, r) for n in b["convergence"]["nfe"] for r in range(b["fid"]["repeats"])]
        if SOLVERS:  # the fair-solver table: each solver variant and the models' own samplers
            models = {model_of(config, m) for m in SOLVERS}
            jobs += [(ds, m, n, r) for m in SOLVERS + sorted(models)
                     for n in b["solver_nfe"] for r in range(b["fid"]["repeats"])]
        jobs += replicate_jobs(ds, b)
    return sorted(set(jobs))


def replicate_jobs(ds, b):
    """The sample sets of the training-seed replicates k = 1 .. K-1 (`replicates: K`; ddm.replicates):
    model `<method>-s<k>` samples repeat k's seeds at each NFE its method has in the tables
    (Table 1's, and a Table 5 row's ablation_nfe), one set per network."""
    jobs = []
    for m in [m for m in replicated_methods(config) if m in TABLE1 + ABLATIONS]:
        nfes = (b["nfe"] + (b["nfe_long"] if config["long_nfe"] else [])) if m in TABLE1 else b["ablation_nfe"]
        jobs += [(ds, replicate_name(m, k), n, k) for k in range(1, replicate_count(config)) for n in nfes]
    return jobs


def convergence_methods(dataset):
    """Methods whose FID against training step is recorded, plotted and plateau-checked (ddm.config)."""
    return config_convergence_methods(config, dataset)


def convergence_files():
    return [f"results/convergence/{d}/{m}.json" for d in DATASETS for m in convergence_methods(d)]


def set_size(dataset, nfe):
    """Samples of a (dataset, NFE) set: the FID count, or num_samples_long at an NFE of nfe_long only."""
    b = PRESET[dataset]
    long = int(nfe) in b["nfe_long"] and int(nfe) not in b["nfe"]
    return b["num_samples_long"] if long else b["fid"]["num_samples"]


def sample_set_files(dataset, method, nfe, repeat):
    """The files of one sample set, in sample order: nfe{N}-r{R}.pt when it is one shard, else
    nfe{N}-r{R}/shard{k}.pt for k = 0 .. ceil(num_samples / shard_size) - 1 (one job each)."""
    n = set_size(dataset, nfe)
    count = shard_count(n, set_shard_size(PRESET[dataset], n))
    base = f"results/samples/{dataset}/{method}/nfe{nfe}-r{repeat}"
    return [f"{base}.pt"] if count == 1 else [f"{base}/shard{k}.pt" for k in range(count)]


def metric_files():
    return [f"results/metrics/{d}/{m}/nfe{n}-r{r}.json" for d, m, n, r in sample_jobs()]


def fig3_files():
    return [f"results/metrics/{d}/fig3.json" for d in DATASETS] if FIG3 else []


def task_set_files(folder, ext):
    """The file of each (NFE, repeat) sample set in a folder of sample-task / evaluate-task."""
    return [f"{folder}/nfe{n}-r{r}.{ext}" for n, r in TASK_SETS]


def autoencoder_files(task):
    """A latent task's autoencoder (`ddm train-autoencoder`): model file and PSNR file; none for a
    task in pixel space (no `latent` block)."""
    if "latent" not in task_config(task):
        return []
    return [f"results/models/autoencoder/{task}.pt", f"results/models/autoencoder/{task}.json"]


def task_metric_outputs(task):
    return [*(f for m in TASK_RULE_METHODS for f in task_set_files(f"results/metrics/tasks/{task}/{m}", "json")),
            f"results/metrics/tasks/{task}/reference.json"]


def task_files(phase):
    """The products of the conditioned tasks in one phase (none when `conditioned` is off)."""
    pairs = [(t, m) for t in TASK_NAMES for m in TASK_METHODS]
    if phase == "download":
        return [f"data/prepared/tasks/{t}/{s}.pt" for t in TASK_NAMES for s in ("train", "test")]
    if phase == "train":
        return ([f for t in TASK_NAMES for f in autoencoder_files(t)]
                + [f"results/{k}/tasks/{t}/{m}.{e}" for t, m in pairs for k, e in (("models", "pt"), ("curves", "csv"))])
    if phase == "sample":
        return [f for t, m in pairs for f in task_set_files(f"results/samples/tasks/{t}/{m}", "pt")]
    if phase == "evaluate":
        return [f for t in TASK_NAMES for f in task_metric_outputs(t)]
    if phase == "tables":
        return [f"reports/figures/tasks_{t}.png" for t in TASK_NAMES]
    return []


def figure_files():
    files = [f"reports/figures/fid_vs_nfe_{d}.png" for d in DATASETS]
    files += task_files("tables")
    files += [f"reports/figures/convergence_{d}.png" for d in DATASETS if convergence_methods(d)]
    # a grid per trained network: each training-seed replicate of Table 1 (network k: its sample set k)
    networks = [replicate_name(m, k) for m in TABLE1 for k in range(replicate_count(config) if m in replicated_methods(config) else 1)]
    files += [f"reports/figures/samples_{d}_{m}_nfe{n}.png" for d in DATASETS for m in networks for n in PRESET[d]["nfe"]]
    files += [f"reports/figures/fig3_{d}.png" for d in DATASETS] if FIG3 else []
    return files


def phase_outputs(phase):
    """Every product of one phase: each file its jobs write for `all` (the phase target's inputs).

    `all` is the union over the phases of workflow/phases.yaml (all_outputs), so a product
    deleted after a complete run is rebuilt by `snakemake all`, as `dvc status` reports it
    changed. A new rule's outputs join `all` by being listed here, under the rule's phase
    (tests/test_dvc.py fails when a job of `all`'s graph writes a file that is not listed)."""
    own = _phase_outputs(phase)
    return own + [f for f in task_files(phase) if f not in own]  # (the tables phase's figures are figure_files)


def _phase_outputs(phase):
    if phase == "download":
        return [f"data/prepared/{d}.pt" for d in DATASETS]
    if phase == "reference":
        return [f"results/fid/{d}/{f}" for d in DATASETS for f in ("extractor.json", "reference.npz")]
    if phase == "train":
        trained = {(d, model_of(config, m)) for d, m, _, _ in sample_jobs()}
        trained |= {(d, m) for d in DATASETS for m in FIG3}  # Fig. 3's models (ddm.roles.fig3_methods)
        return sorted(f"results/{kind}/{d}/{m}.{ext}" for d, m in trained
                      for kind, ext in (("models", "pt"), ("curves", "csv")))
    if phase == "sample":
        return [f for d, m, n, r in sample_jobs() for f in sample_set_files(d, m, n, r)]  # every shard
    if phase == "evaluate":
        return metric_files() + fig3_files() + convergence_files()
    if phase == "stats":
        return ["reports/metrics.json", "reports/metrics.csv"]
    if phase == "tables":
        return ["reports/tables.tex", "reports/claims.tex", "reports/report.pdf"] + figure_files()
    raise WorkflowError(f"unknown phase {phase}")


def all_outputs():
    """Every product of the pipeline: the phases' outputs, in the order of workflow/phases.yaml."""
    return [f for phase in PHASES for f in phase_outputs(phase)]


def task_config(task, method=None):
    """The resolved config of (task, method) (`ddm.config.resolve_task`; the data block is every method's)."""
    return resolve_task(config, task, method or TASK_METHODS[0])


# -- before the run: the products verified (an input function of `all` and of each phase target) --
def verified_before_run(phase=None):
    """An input function (it adds no input) of `all` (phase None: every product) and of the target of
    one phase (`phase_<name>`, the command of its DVC stage): before a real run, in the main process
    (not a dry run, not a job of a cluster), every existing product of the target is verified
    against its embedded digest (ddm.io.verify_product). A product that changed after it was
    written keeps its size and mtime (a flipped byte, an edit that restored the mtime), which
    Snakemake's rerun triggers and a nothing-to-do run cannot see; left alone, DVC would record
    it in dvc.lock. So the first one stops the run before any job, with one line naming the file
    and the fix, exit code 1: `snakemake all` fails, and so does the DVC stage, which leaves
    dvc.lock unchanged. A product verified before with the same size, mtime, ctime and inode is not
    read again (ddm.verified: a restored mtime still changes the ctime). Its cost on real products:
    benchmarks/RESULTS.md, "Product checks"."""

    def check(wildcards):
        if workflow.dryrun or not workflow.is_main_process:
            return []
        bad = first_corrupt(all_outputs() if phase is None else phase_outputs(phase))
        if bad:
            print(f"{bad}; nothing was run or recorded (dvc.lock unchanged); `dvc repro` rebuilds it too",
                  file=sys.stderr)
            sys.exit(1)  # one line: a WorkflowError raised here would print Snakemake's traceback
        return []

    return check


# -- after the run (the Snakefile's onsuccess) ---------------------------------------------
def record_in_dvc():
    """After a successful `snakemake all` in a DVC repository: record every product in dvc.lock
    (`dvc commit -f` of dvc.yaml's stages, one per phase), so that `dvc status` has nothing to do
    and `dvc exp run -S key=value` reruns only the phases whose params or deps change, instead of
    deleting outputs it does not know and recomputing everything.

    Only when `all` (the default target) ran whole: then every product is current by Snakemake's
    rules, which decide more finely than DVC's stages. Not inside a DVC stage (DVC records it).
    Never when a product does not verify against its embedded digest (ddm.verified.first_corrupt):
    DVC would record the corrupt file as good."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    if os.environ.get("DVC_STAGE") or not (Path(".dvc").is_dir() and Path("dvc.yaml").is_file()):
        return
    s = workflow.dag_settings
    partial = (set(s.targets) - {"all"} or s.until or s.omit_from or s.allowed_rules
               or s.target_jobs or s.batch)
    how = "`dvc commit -f` once every product is current (`snakemake all`)"
    if partial:
        print(f"dvc.lock not updated: this run built only part of `all`; run {how}", file=sys.stderr)
        return
    if workflow.config_settings.overwrite_config:  # --config / --configfile: not params.yaml's products
        print(f"dvc.lock not updated: --config/--configfile overrode params.yaml, which DVC reads; run "
              f"{how} without them", file=sys.stderr)
        return
    bad = first_corrupt(all_outputs())
    if bad:
        print(f"dvc.lock not updated: a product does not verify: {bad}", file=sys.stderr)
        return
    dvc = shutil.which("dvc", path=os.path.dirname(sys.executable)) or shutil.which("dvc")
    if dvc is None:
        print(f"dvc.lock not updated: no `dvc` next to {sys.executable} or on PATH; run {how}",
              file=sys.stderr)
        return
    # --no-relink: DVC would otherwise touch each cached single-file output (a new mtime)
    r = subprocess.run([dvc, "commit", "--force", "--no-relink", *PHASES], capture_output=True, text=True)
    if r.returncode != 0:
        said = [line.strip() for line in (r.stderr + r.stdout).splitlines() if line.strip()] or ["no output"]
        why = next((line for line in said if line.startswith("ERROR")), said[-1])
        print(f"dvc.lock not updated: `dvc commit --force` failed ({why}); run {how}", file=sys.stderr)
        return
    print(f"dvc.lock records the products of the {len(PHASES)} stages ({', '.join(PHASES)})", file=sys.stderr)


# -- before the run (the Snakefile's onstart) ----------------------------------------------
def unwritable_folder():
    """The first folder a job writes below (results/, reports/, data/, logs/ and their folders that
    are not links, as they exist) that this run cannot write to, or None."""
    for top in ("results", "reports", "data", "logs"):
        for folder, subfolders, _ in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if not os.path.islink(os.path.join(folder, d)))
            if not os.access(folder, os.W_OK | os.X_OK):
                return folder
    return None
