"""The plan before submitting: what the Snakemake graph of a configuration costs, per rule and in
total (jobs, GPU-hours, CPU-hours, peak memory and disk, suggested wall time per job).

  python -m ddm.plan [--configfile runs/converged.yaml] [--config preset=paper ablations=True ...]
                     [--device cpu|gpu] [--gpu a100|h100] [--precision fp32|tf32|bf16] [--json FILE]

Run at the repository root (or any folder with the Snakefile). The jobs are Snakemake's own: a
forced dry run of the graph through its API (``ddm.plangraph``; ``--todo``: only the jobs a run
would still do), so the counts equal ``snakemake -n --forceall``'s. Each job's cost is its work (FLOPs of the networks
it runs, ddm.netcost) divided by the throughput table (ddm/data/throughput.yaml: measured on the
CPU; on a GPU the named card's dense peak in the job's precision times a stated efficiency until
benchmarks/gpu_check.sh measures it, ddm.gpucards) plus its start-up. Memory per job comes from the
batch and the network (weights, optimiser state, the activations autograd keeps); a job above the
card's memory or the profile's ``mem_mb`` ends the plan with one line after the table (exit 2). The GPU rules
are those the SLURM profile (slurm/config.yaml) gives a GPU; ``--device cpu`` plans every job on
this CPU (the embedded preset's default). Wall times: safety x estimate + margin; training resumes
after a time limit, so it asks for at most its profile ``runtime`` and needs ``allocations`` of it
(``retries`` = allocations - 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ddm import gpucards
from ddm.resources import THROUGHPUT
from ddm.io import InputError, OutputError, check_output, save_text
from ddm.plangraph import graph_jobs, merged_config, parse_overrides  # Snakemake's own graph
from ddm.yamlio import ConfigError, read_yaml

#: The throughput table (ddm/data/throughput.yaml).
TABLE = THROUGHPUT
#: The SLURM profile the plan checks by default (runtime, retries).
PROFILE = "slurm/config.yaml"
#: the trainings: they resume from checkpoints after a time limit (USR1 -> checkpoint -> exit 75)
TRAININGS = ("train", "train_task", "train_autoencoder")
#: rules whose jobs resume after a time limit: the trainings, and sample_task set by set (ddm.setstore)
RESUMABLE = TRAININGS + ("sample_task",)


def load_table(path=None) -> dict:
    """The throughput table: the package's, or ``path`` (``--table``; one-line ConfigError for a file that
    is missing, not YAML, or not a table of devices)."""
    if not path:
        return yaml.safe_load(TABLE.read_text())
    if not Path(path).is_file():
        raise ConfigError(f"--table {path}: no such file (a throughput table, as ddm/data/throughput.yaml)")
    table = read_yaml(path)
    if not isinstance(table, dict) or not isinstance(table.get("devices"), dict):
        raise ConfigError(f"--table {path}: not a throughput table (a mapping with `devices`, as "
                          "ddm/data/throughput.yaml)")
    return table


def check_arguments(args) -> None:
    """Before any work: the folder holds a workflow, a named profile exists, the --json file can be
    written; else a one-line ConfigError naming the option and the fix."""
    folder = Path(args.directory)
    missing = [f for f in ("Snakefile", "params.yaml") if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"--directory {args.directory}: no {' or '.join(missing)} there: run in the folder "
                          "holding the Snakefile (the repository root), or name it with --directory")
    if args.profile != PROFILE and not (folder / args.profile).is_file():
        raise ConfigError(f"--profile {args.profile}: no such file under {folder} (a SLURM profile's "
                          f"config.yaml, e.g. {PROFILE})")
    if args.json:
        try:
            check_output(args.json, "--json")
        except (InputError, OutputError) as e:
            raise ConfigError(str(e)) from None


# -- the SLURM profile -------------------------------------------------------------------------
def profile_resources(path="slurm/config.yaml") -> dict:
    """``{rule: {runtime, gres, ...}, "__default__": {...}, "__retries__": n}`` of a profile."""
    p = Path(path)
    if not p.is_file():
        return {}
    prof = yaml.safe_load(p.read_text()) or {}
    out = {r: dict(v or {}) for r, v in (prof.get("set-resources") or {}).items()}
    out["__default__"] = dict(prof.get("default-resources") or {})
    out["__retries__"] = int(prof.get("retries", 0) or 0)
    rules = prof.get("preemptible-rules")
    out["__preemptible__"] = (rules if isinstance(rules, list) else str(rules or "").split()) or []
    out["__preemptible_retries__"] = prof.get("preemptible-retries")
    return out


def profile_runtime(profile: dict, rule: str) -> int | None:
    r = profile.get(rule, {}).get("runtime", profile.get("__default__", {}).get("runtime"))
    return int(r) if r is not None else None


def profile_retries(profile: dict, rule: str) -> int:
    """The retries a rule's jobs get: ``preemptible-retries`` for the profile's preemptible rules
    (Snakemake's per-rule retries), else ``retries``."""
    if rule in profile.get("__preemptible__", []) and profile.get("__preemptible_retries__") is not None:
        return int(profile["__preemptible_retries__"])
    return profile.get("__retries__", 0)


def gpu_rules(profile: dict) -> set[str]:
    """Rules whose SLURM jobs get a GPU: a `gres: gpu...` in the profile, and `train` (its GPUs
    come from params.yaml through the rule)."""
    return {"train"} | {r for r, v in profile.items() if not r.startswith("__") and "gpu" in str(v.get("gres", ""))}


# -- costs ---------------------------------------------------------------------------------------
@dataclass
class Cost:
    seconds: float = 0.0       # compute of one job, start-up excluded
    startup: str = "light"     # kind of start-up (the table's startup_s)
    work: str = ""             # kind of work (the table's flops_per_s), "" for none
    flops: float = 0.0
    mem_gb: float = 1.0        # host memory
    gpu_mem_gb: float = 0.0    # GPU memory per GPU (a training: state + the activations autograd keeps)
    disk_gb: float = 0.0       # what the job writes
    gpus: int = 1
    precision: str = gpucards.INFERENCE_PRECISION  # on a GPU (a training: its train.precision / tf32)


def seconds_of(cost: Cost, dev: dict) -> float:
    rate = gpucards.rate(dev, cost.work, cost.precision) if cost.work else None
    compute = cost.flops / rate / max(cost.gpus, 1) if rate else 0.0  # several GPUs: linear scaling assumed
    return compute + cost.seconds + dev["startup_s"][cost.startup] + dev.get("snakemake_job_s", 0.0)




@dataclass
class Row:
    """One rule of the plan."""
    rule: str
    device: str
    jobs: int = 0
    seconds: list = field(default_factory=list)   # estimate of each job (s)
    gpus: int = 0
    mem_gb: float = 0.0
    gpu_mem_gb: float = 0.0
    disk_gb: float = 0.0
    runtime: int | None = None      # the profile's runtime (min)
    wall_min: int = 0               # suggested wall time per job (min)
    allocations: int = 1            # of the suggested wall time, for the longest job
    retries: int = 0                # the profile's retries for this rule
    precisions: list = field(default_factory=list)  # of its GPU work
    largest: dict = field(default_factory=dict)     # "gpu_mem_gb" / "mem_gb" -> wildcards of its largest job

    @property
    def device_hours(self) -> float:
        return sum(self.seconds) * max(self.gpus, 1) / 3600


def job_row_cost(job: dict, params: dict, dev: dict, precision: str | None = None) -> tuple[float, Cost]:
    """A job's seconds on ``dev`` and its cost; ``precision`` replaces a training's own."""
    from ddm.jobcost import RULES

    if not job["shell"]:  # a target rule (all, phase_*): no process
        return 0.0, Cost(gpus=0, mem_gb=0.0)
    fn = RULES.get(job["rule"])
    cost = Cost(**fn(params, job["wildcards"], job["shell"])) if fn else Cost(gpus=0)
    if precision and cost.work == "train":
        cost.precision = precision
    return seconds_of(cost, dev), cost


def suggested_wall(seconds: float, wall: dict) -> int:
    """Minutes to ask for a job of ``seconds``: safety x estimate + margin, up to 10 minutes."""
    minutes = wall["safety"] * seconds / 60 + wall["margin_min"]
    return int(math.ceil(minutes / 10) * 10)


def size_row(row: Row, wall: dict) -> None:
    """Wall time and allocations of a rule's longest job; a resumable rule's job asks for its
    profile runtime at most (or max_wall) and resumes in the next allocation."""
    longest = max(row.seconds, default=0.0)
    need = suggested_wall(longest, wall)
    if row.rule in RESUMABLE and row.device == "gpu":
        cap = min(row.runtime or wall["max_wall_min"], wall["max_wall_min"])
        if need > cap:
            useful = cap - wall["lost_per_allocation_min"]
            row.allocations = int(math.ceil((wall["safety"] * longest / 60 + wall["margin_min"]) / useful))
            need = cap
    row.wall_min = need


def make_plan(jobs: list[dict], params: dict, table: dict, profile: dict, device: str,
              precision: str | None = None) -> list[Row]:
    """Rows of the plan, one per rule, in the order of the graph (most expensive first); ``table``'s
    devices are resolved (``gpu``: :func:`ddm.gpucards.gpu_device`)."""
    gpu = gpu_rules(profile) if device == "gpu" else set()
    rows: dict[str, Row] = {}
    for job in jobs:
        where = "gpu" if job["rule"] in gpu else "cpu"
        secs, cost = job_row_cost(job, params, table["devices"][where], precision)
        row = rows.setdefault(job["rule"], Row(job["rule"], where, runtime=profile_runtime(profile, job["rule"]),
                                               retries=profile_retries(profile, job["rule"])))
        row.jobs += 1
        row.seconds.append(secs)
        row.gpus = max(row.gpus, cost.gpus if where == "gpu" else 0)
        gpu_mem = cost.gpu_mem_gb + table["devices"]["gpu"]["context_gb"] if where == "gpu" else 0.0
        for key, value in (("mem_gb", cost.mem_gb), ("gpu_mem_gb", gpu_mem)):
            if value > getattr(row, key):
                setattr(row, key, value)
                row.largest[key] = "/".join(map(str, job["wildcards"].values()))
        row.precisions = sorted({*row.precisions, cost.precision}) if where == "gpu" and cost.work else row.precisions
        row.disk_gb += cost.disk_gb
    for row in rows.values():
        size_row(row, table["wall"])
    return sorted(rows.values(), key=lambda r: -r.device_hours)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:,.2f}" if h < 1 else f"{h:,.1f}"


def _minutes(m: float) -> str:
    return f"{m / 60:,.1f} h" if m >= 120 else f"{m:,.0f} min" if m >= 1 else f"{m * 60:.0f} s"


def format_plan(rows: list[Row], table: dict, device: str) -> str:
    head = (f"{'rule':<18}{'jobs':>6}{'GPU-h':>10}{'CPU-h':>9}{'job (max)':>11}{'wall/job':>10}"
            f"{'allocs':>7}{'profile':>9}{'mem GB':>8}{'GPU GB':>8}{'disk GB':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        gpu_h = r.device_hours if r.device == "gpu" else 0.0
        cpu_h = r.device_hours if r.device == "cpu" else 0.0
        warn = " !" if r.runtime is not None and device == "gpu" and r.runtime < r.wall_min else ""
        lines.append(f"{r.rule:<18}{r.jobs:>6}{_hours(gpu_h):>10}{_hours(cpu_h):>9}"
                     f"{_minutes(max(r.seconds) / 60):>11}{_minutes(r.wall_min):>10}{r.allocations:>7}"
                     f"{(_minutes(r.runtime) if r.runtime else '-'):>9}{r.mem_gb:>8.1f}{r.gpu_mem_gb:>8.1f}"
                     f"{r.disk_gb:>9.1f}{warn}")
    gpu_total = sum(r.device_hours for r in rows if r.device == "gpu")
    cpu_total = sum(r.device_hours for r in rows if r.device == "cpu")
    lines.append("-" * len(head))
    lines.append(f"{'total':<18}{sum(r.jobs for r in rows):>6}{_hours(gpu_total):>10}{_hours(cpu_total):>9}"
                 f"{'':>55}{sum(r.disk_gb for r in rows):>9.1f}")
    return "\n".join(lines)


def notes(rows: list[Row], table: dict, device: str) -> list[str]:
    """The assumptions, and what the profile should change (runtime, retries, shard_size)."""
    out = [f"{name}: {table['devices'][name]['source']}" for name in ("cpu", "gpu")
           if any(r.device == name for r in rows)]
    w = table["wall"]
    out.append(f"wall/job = {w['safety']} x estimate + {w['margin_min']} min, rounded up to 10 min; allocs: of a "
               f"resumable (training) job's profile runtime, {w['lost_per_allocation_min']} min lost per allocation")
    if device != "gpu":
        return out
    by = {}
    for r in rows:
        if r.precisions:
            by.setdefault("/".join(r.precisions), []).append(r.rule)
    out.append("precision on the GPU: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in by.items()))
    for r in rows:
        if r.runtime is not None and r.runtime < r.wall_min:
            out.append(f"{r.rule}: the profile's runtime {r.runtime} min is below the suggested {r.wall_min} min")
        if r.allocations > 1:
            need = r.allocations - 1
            ok = "enough" if r.retries >= need else "too few"
            out.append(f"{r.rule}: {r.allocations} allocations of {r.wall_min} min per job -> retries >= {need} "
                       f"(the profile gives {r.retries}: {ok})" + ("; or more GPUs per job (train.gpus, train.nodes)"
                                                                   if r.rule == "train" else ""))
        if r.rule not in RESUMABLE and r.wall_min > w["max_wall_min"]:
            out.append(f"{r.rule}: a job needs {_minutes(r.wall_min)}, more than {_minutes(w['max_wall_min'])}, and "
                       "cannot resume: split it (sample sets: a smaller shard_size)")
    return out


def plan(workdir=".", overrides: dict | None = None, *, device: str | None = None, profile="slurm/config.yaml",
         table_path=None, forceall: bool = True, targets=("all",), configfiles=(), gpu: str | None = None,
         precision: str | None = None) -> tuple[list[Row], dict]:
    """The plan of a configuration (params.yaml, ``configfiles`` over it, then ``overrides``) on the card
    ``gpu`` (the table's default if None), trainings in ``precision`` (their own if None): rows and the
    context (config, table, device, and ``error``: the one line saying which job does not fit the card's
    memory or the profile's ``mem_mb``, else None)."""
    overrides = overrides or {}
    workdir = Path(workdir).resolve()
    params = merged_config(workdir, overrides, configfiles)  # validated, its plug-ins loaded
    device = device or ("cpu" if params["preset"] == "embedded" else "gpu")
    table = load_table(table_path)
    table["devices"]["gpu"] = gpucards.gpu_device(table, gpu)
    jobs = graph_jobs(workdir, overrides, targets=targets, forceall=forceall, configfiles=configfiles)
    prof = profile_resources(workdir / profile)
    rows = make_plan(jobs, params, table, prof, device, precision)
    error = gpucards.memory_error(rows, table["devices"]["gpu"], prof) if device == "gpu" else None
    return rows, {"params": params, "table": table, "device": device, "error": error}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddm.plan", description=__doc__.split("\n")[0])
    ap.add_argument("--configfile", nargs="*", default=[], metavar="FILE",
                    help="as snakemake --configfile: merged over params.yaml (e.g. runs/converged.yaml)")
    ap.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="as snakemake --config")
    ap.add_argument("--device", choices=("cpu", "gpu"),
                    help="gpu: the profile's GPU rules on GPUs (default for preset=paper); cpu: every job here")
    ap.add_argument("--gpu", help="the card of the GPU jobs, a key of the throughput table's `cards` (a100, h100; "
                    "default: its devices.gpu.card)")
    ap.add_argument("--precision", choices=gpucards.PRECISIONS,
                    help="the trainings' precision on the GPU (default: each training's train.precision / tf32)")
    ap.add_argument("--profile", default=PROFILE, help="the SLURM profile to check (runtime, retries)")
    ap.add_argument("--table", help="throughput table (default: the package's ddm/data/throughput.yaml)")
    ap.add_argument("--todo", action="store_true", help="only the jobs a run would still do (no --forceall)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--directory", default=".", help="the folder holding the Snakefile")
    args = ap.parse_args(argv)
    try:
        check_arguments(args)
        rows, ctx = plan(args.directory, parse_overrides(args.config), device=args.device, profile=args.profile,
                         table_path=args.table, forceall=not args.todo, configfiles=args.configfile, gpu=args.gpu,
                         precision=args.precision)
    except ConfigError as e:  # one line, exit 2 (as `ddm`)
        print(f"python -m ddm.plan: {e}", file=sys.stderr)
        return 2
    p = ctx["params"]
    switches = ", ".join(f"{k}={p.get(k)}" for k in ("ablations", "solver_study", "long_nfe", "conditioned"))
    gpu = ctx["table"]["devices"]["gpu"]
    where = f"gpu ({gpu['card']}, {gpu['memory_gb']:.0f} GB)" if ctx["device"] == "gpu" else ctx["device"]
    print(f"plan: preset={p['preset']} ({switches}); device={where}")
    print(format_plan(rows, ctx["table"], ctx["device"]))
    for line in notes(rows, ctx["table"], ctx["device"]):
        print(f"  * {line}")
    if args.json:
        save_text(json.dumps([{**r.__dict__, "device_hours": r.device_hours} for r in rows], indent=1), args.json)
    if ctx["error"]:  # a job that does not fit its card or its mem_mb: the table above, then one line, exit 2
        print(f"python -m ddm.plan: {ctx['error']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
