# Helpers shared by the rules: the job list of each phase, derived from params.yaml through
# ddm.config (the same resolution `ddm` itself uses).
import json
import shlex
import sys

import yaml

from ddm.config import ConfigError, dataset_names, model_of, resolve, validate as validate_params

try:
    validate_params(config)
except ConfigError as e:
    raise WorkflowError(str(e))

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

PRESET = config["presets"][config["preset"]]
DATASETS = dataset_names(config)
TABLE1 = list(config["methods"])
ABLATIONS = [m for m in config["ablation_methods"] if m != "ddpm_x0"] if config["ablations"] else []
SOLVERS = list(config["solver_methods"]) if config["solver_study"] else []

with open(workflow.source_path("../phases.yaml")) as _f:
    PHASES = yaml.safe_load(_f)


wildcard_constraints:
    dataset="[a-z0-9]+",
    method="[a-z][a-z0-9_]*",
    nfe=r"\d+",
    repeat=r"\d+",


def training_config(wc):
    """What training reads of the job's resolved config, as JSON: a Snakemake param, so a change
    reruns the training (sampling-only keys are the sample rule's param instead)."""
    cfg = resolve(config, wc.dataset, wc.method)
    return json.dumps({k: v for k, v in cfg.items() if k != "sampling"}, sort_keys=True)


def sampling_config(wc):
    return json.dumps(resolve(config, wc.dataset, wc.method)["sampling"], sort_keys=True)


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
        if SOLVERS:  # the fair-solver table: each solver variant and the models' own samplers
            models = {model_of(config, m) for m in SOLVERS}
            jobs += [(ds, m, n, r) for m in SOLVERS + sorted(models)
                     for n in b["solver_nfe"] for r in range(b["fid"]["repeats"])]
    return sorted(set(jobs))


def model_file(wc):
    return f"results/models/{wc.dataset}/{model_of(config, wc.method)}.pt"


def num_samples(wc):
    b = PRESET[wc.dataset]
    long = int(wc.nfe) in b["nfe_long"] and int(wc.nfe) not in b["nfe"]
    return b["num_samples_long"] if long else b["fid"]["num_samples"]


def metric_files():
    return [f"results/metrics/{d}/{m}/nfe{n}-r{r}.json" for d, m, n, r in sample_jobs()]


def fig3_files():
    return [f"results/metrics/{d}/fig3.json" for d in DATASETS] if config["ablations"] else []


def figure_files():
    files = [f"reports/figures/fid_vs_nfe_{d}.png" for d in DATASETS]
    files += [f"reports/figures/samples_{d}_{m}_nfe{n}.png" for d in DATASETS for m in TABLE1 for n in PRESET[d]["nfe"]]
    files += [f"reports/figures/fig3_{d}.png" for d in DATASETS] if config["ablations"] else []
    return files


def phase_outputs(phase):
    """Every file the jobs of one phase write for `all` (its target rule's inputs)."""
    if phase == "download":
        return [f"data/prepared/{d}.pt" for d in DATASETS]
    if phase == "reference":
        return [f"results/fid/{d}/reference.npz" for d in DATASETS]
    if phase == "train":
        trained = {(d, model_of(config, m)) for d, m, _, _ in sample_jobs()}
        if config["ablations"]:  # Fig. 3 compares these three
            trained |= {(d, m) for d in DATASETS for m in ("ddm", "ddpm", "ddpm_x0")}
        return sorted(f"results/{kind}/{d}/{m}.{ext}" for d, m in trained
                      for kind, ext in (("models", "pt"), ("curves", "csv")))
    if phase == "sample":
        return [f"results/samples/{d}/{m}/nfe{n}-r{r}.pt" for d, m, n, r in sample_jobs()]
    if phase == "evaluate":
        return metric_files() + fig3_files()
    if phase == "stats":
        return ["reports/metrics.json"]
    if phase == "tables":
        return ["reports/tables.tex"] + figure_files()
    raise WorkflowError(f"unknown phase {phase}")
