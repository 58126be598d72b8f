"""The SLURM profile (slurm/config.yaml) on a real one-machine SLURM (tests/slurm_cluster.py).

Both runs start from a copy of the session's one tiny run (conftest ``tiny_run``), so that only
the jobs under test are computed, every one of them through the real `sbatch`:

(a) test_pipeline_through_slurm: a changed VE-SDE setting (sigma_max) reruns that configuration
    from training to the tables, `snakemake --profile slurm --profile slurm-test all`, where
    slurm/ is the shipped profile copied unchanged and slurm-test/ is a test overlay: partition
    `debug`, no GPU request (the case of a CPU-only cluster), fast status polling, and -- to fit
    the time budget -- the CPU-only phases grouped into two SLURM jobs, before and after
    training (every job still goes through sbatch; train stays one job per model). Every rule
    from `train` to the report runs.
(b) test_shipped_profile_sbatch_lines: the shipped profile itself (only its partition
    placeholder replaced) runs train -> sample -> evaluate of one model; the real `sbatch`
    lines the plugin ran (its --verbose log) must ask for one GPU for train, sample and evaluate only,
    carry the --signal for train, and no --ntasks-per-gpu (plugin issue 373); slurmctld must
    have given train the GPU (the test cluster has one pretend GPU) and every job must
    succeed (the plugin's srun inside the allocation).
(c) test_training_finishes_across_three_allocations: in that same run, each of the first two
    allocations of the training gets `scancel --signal=USR1` once it has written a checkpoint
    of its own, as SLURM's --signal warning before a time limit would send it; Snakemake must
    resubmit it each time under the training rules' own retries (`preemptible-retries`: the run
    adds an overlay with `retries: 0`, so the global count cannot be what resubmits it), and
    each new job must resume from the checkpoint, the third one writing the model.

(b) and (c) share one run. Skipped without SLURM unless CI is set (then they fail).
Note on (c): the USR1 also reaches the plugin's job-step Snakemake under srun, which has no
handler and dies, so the first job ends FAILED at once, and ddm (proctrack/linuxproc here)
finishes its checkpoint as an orphan; on proctrack/cgroup clusters it is killed instead and
the resubmitted job resumes from the last periodic checkpoint (ckpt_every).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import copy_run
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "slurm" / "config.yaml"
#: The change that (a) runs through SLURM: one configuration's training and everything after it.
CHANGED = ("sde", {"sigma_max": 12.0})
#: What the copies of the tiny run leave out: its git and DVC state (no `dvc commit` after these
#: runs) and earlier SLURM logs.
NOT_COPIED = (".git", ".dvc", "dvc.lock", "slurm_logs")
PLACEHOLDER = "SITE-PARTITION"
# Executor settings only (no sbatch option): poll after 2 s, skip the account guess (no
# sacctmgr here), keep the SLURM logs of successful jobs for the assertions.
EXEC_OPTS = ["--slurm-init-seconds-before-status-checks", "2", "--slurm-no-account",
             "--slurm-keep-successful-logs"]

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _popen_snakemake(workdir: Path, args: list[str]) -> subprocess.Popen:
    # SIGINT back to default in the child (a background CI shell may ignore it): on SIGINT
    # Snakemake scancels its SLURM jobs, on SIGTERM it would wait for them.
    return subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), *args], cwd=workdir,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def snakemake(workdir: Path, args: list[str], timeout: float) -> tuple[int, str]:
    """Run Snakemake in workdir; on timeout interrupt it (it then scancels its jobs) and fail."""
    p = _popen_snakemake(workdir, args)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        pytest.fail(f"snakemake {' '.join(args)} did not finish in {timeout} s:\n{out[-6000:]}")
    (workdir / f"snakemake-{time.strftime('%H%M%S')}.out").write_text(out)
    return p.returncode, out


def shipped_profile_copy(dest: Path) -> None:
    """slurm/ as shipped, with only the site-specific partition placeholder replaced."""
    text = SHIPPED.read_text()
    assert text.count(f'slurm_partition: "{PLACEHOLDER}"') == 1, \
        "the shipped profile no longer has its partition placeholder"
    (dest / "slurm").mkdir(exist_ok=True)
    (dest / "slurm" / "config.yaml").write_text(
        text.replace(f'slurm_partition: "{PLACEHOLDER}"', 'slurm_partition: "debug"'))


def phase_groups(workdir: Path) -> dict[str, str]:
    """Rules of the CPU-only phases -> a group per stretch of phases (before training, after
    training), from workflow/phases.yaml. {} if that file is not there. One group job after
    training, not one per phase: the plugin's status polls back off by 10 s per poll, so each
    further SLURM job costs about half a minute of waiting on top of its own start."""
    phases_file = workdir / "workflow" / "phases.yaml"
    if not phases_file.exists():
        return {}
    phases = yaml.safe_load(phases_file.read_text()) or {}
    groups, name = {}, "pre"
    for spec in phases.values():
        rules = (spec or {}).get("rules", [])
        if "train" in rules:
            name = "post"
            continue
        for rule in rules:
            groups[rule] = name
    return groups


def sbatch_calls(output: str) -> list[tuple[str, list[str]]]:
    """(rule, sbatch argv up to --wrap) of every `sbatch call:` the plugin logged (--verbose)."""
    calls = []
    for line in output.splitlines():
        if "sbatch call: " not in line:
            continue
        cmd = line.split("sbatch call: ", 1)[1].split(" --wrap=", 1)[0]
        argv = shlex.split(cmd)
        comment = argv[argv.index("--comment") + 1]
        m = re.match(r"^rule_(.+?)(_wildcards_.*)?$", comment)
        calls.append((m.group(1) if m else comment, argv))
    return calls


def submitted(output: str) -> list[tuple[str, str]]:
    """(SLURM log folder e.g. 'rule_train', SLURM job id) of every submission, from the
    executor's info line 'Job N has been submitted with SLURM jobid M (log: ...)'."""
    return [(m.group(2), m.group(1)) for m in re.finditer(
        r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/([^/]+)/", output)]


# ---------------------------------------------------------------------------------------------
# the shared pipeline run
# ---------------------------------------------------------------------------------------------
def tiny_copy(tiny_run: Path, dest: Path) -> tuple[Path, dict]:
    """A copy of the tiny run with the shipped slurm/ profile; returns it and its params."""
    wd = copy_run(tiny_run, dest, ignore=NOT_COPIED)
    shutil.copytree(REPO / "slurm", wd / "slurm")          # the shipped profile, unchanged
    return wd, yaml.safe_load((wd / "params.yaml").read_text())


@pytest.fixture(scope="module")
def pipeline(slurm_cluster, tiny_run, tmp_path_factory):  # noqa: F811
    wd, params = tiny_copy(tiny_run, tmp_path_factory.mktemp("slurm-pipeline") / "run")
    method, change = CHANGED
    params["presets"][params["preset"]]["digits"].setdefault("method_overrides", {}).setdefault(method, {}).update(change)
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shipped = yaml.safe_load(SHIPPED.read_text())
    overlay = {
        # whole top-level keys replace the shipped ones: restate what is kept
        "default-resources": {**shipped["default-resources"], "slurm_partition": "debug"},
        # a CPU-only cluster: no gres; gpus 0 so that the job step adds no `srun --gpus`
        "set-resources": {r: {"gpus": 0, "gres": "", "mem_mb": 2000, "runtime": 30} for r in ("train", "sample")},
        "set-threads": {"train": 1, "sample": 1},
        "cores": os.cpu_count() or 1,          # caps the CPUs of a group job (else: summed)
    }
    groups = phase_groups(wd)
    if groups:
        overlay["groups"] = groups
        overlay["group-components"] = {g: 1000 for g in set(groups.values())}
    (wd / "slurm-test").mkdir()
    (wd / "slurm-test" / "config.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    before = {p.name: p.stat().st_mtime_ns for p in (wd / "results" / "models" / "digits").glob("*.pt")}
    t0 = time.monotonic()
    rc, out = snakemake(wd, ["--profile", "slurm", "--profile", "slurm-test", *EXEC_OPTS,
                             "--verbose", "all"], timeout=900)
    return {"dir": wd, "rc": rc, "out": out, "seconds": time.monotonic() - t0,
            "cluster": slurm_cluster, "models_before": before}


# ---------------------------------------------------------------------------------------------
# (a)
# ---------------------------------------------------------------------------------------------
def test_pipeline_through_slurm(pipeline):
    wd, out, cluster = pipeline["dir"], pipeline["out"], pipeline["cluster"]
    assert pipeline["rc"] == 0, f"snakemake failed:\n{out[-8000:]}"
    assert (wd / "reports" / "tables.tex").stat().st_size > 0
    assert (wd / "reports" / "metrics.json").exists()
    assert (wd / "results" / "models" / "digits" / "ddm.pt").exists()

    # Every job went through sbatch: the plugin logged an sbatch call and a SLURM job id for
    # each, the SLURM log of each is there, and slurmctld accepted each one.
    calls = sbatch_calls(out)
    subs = submitted(out)
    assert calls and len(calls) == len(subs), (len(calls), len(subs))
    # Only the changed configuration was retrained, in one SLURM job; the other models are as
    # the tiny run left them; every rule from training to the report ran.
    models = {p.name: p.stat().st_mtime_ns for p in (wd / "results" / "models" / "digits").glob("*.pt")}
    retrained = {name for name, t in models.items() if pipeline["models_before"].get(name) != t}
    train_jobs = [j for d, j in subs if d == "rule_train"]
    assert retrained == {f"{CHANGED[0]}.pt"} and len(train_jobs) == 1, (subs, retrained)
    ran = {m.group(1) for m in re.finditer(r"^\s*(?:local)?rule (\w+):", out, flags=re.M)}
    assert {"train", "sample", "evaluate", "stats", "report", "fid_plot", "sample_grid"} <= ran, ran
    assert not {"prepare", "extractor", "refstats"} & ran, ran
    for folder, jobid in subs:
        assert list((wd / ".snakemake" / "slurm_logs" / folder).rglob(f"{jobid}.log")), (folder, jobid)
    if not cluster.reused:
        ctld_log = (cluster.log_dir / "slurmctld.log").read_text(errors="replace")
        for _, jobid in subs:
            assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={jobid}\b", ctld_log), jobid
            assert re.search(rf"_job_complete: JobId={jobid} done", ctld_log), jobid

    # The CPU-only override took: no GPU asked anywhere, partition debug everywhere.
    for rule, argv in calls:
        assert not [a for a in argv if a.startswith(("--gres", "--gpus"))], (rule, argv)
        assert argv[argv.index("-p") + 1] == "debug", (rule, argv)
    print(f"\n(a) one configuration, training to tables, through SLURM: {len(subs)} sbatch jobs, "
          f"{pipeline['seconds']:.0f} s")


# ---------------------------------------------------------------------------------------------
# (b) and (c): one run of the shipped profile
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_run(slurm_cluster, tiny_run, tmp_path_factory):  # noqa: F811
    """The shipped profile (partition placeholder -> debug; an overlay sets the global `retries`
    to 0) on train -> sample -> evaluate of one model, with a longer training whose first two
    allocations are sent SIGUSR1 once each has written a checkpoint."""
    wd, params = tiny_copy(tiny_run, tmp_path_factory.mktemp("slurm-shipped") / "run")
    shipped_profile_copy(wd)
    (wd / "slurm-test").mkdir()
    (wd / "slurm-test" / "config.yaml").write_text("retries: 0\n")   # only the per-rule retries resubmit
    params["presets"][params["preset"]]["digits"]["train"].update(steps=STEPS, ckpt_every=5,
                                                                  keep_last=2)
    params["presets"][params["preset"]]["digits"].pop("convergence", None)  # keeps 2 checkpoints, not all
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ckpt_root = wd / "results" / "checkpoints" / "digits"
    old_ckpts = set(ckpt_root.glob("ddm-*/ckpt-*.pt"))

    t0 = time.monotonic()
    p = _popen_snakemake(wd, ["--profile", "slurm", "--profile", "slurm-test", *EXEC_OPTS, "--verbose", "--",
                              TARGET])
    try:
        signalled = warn_each_allocation(slurm_cluster, p, ckpt_root, old_ckpts,
                                         wd / "logs" / "train" / "digits" / "ddm.log", times=2)
        out, _ = p.communicate(timeout=420)
    except BaseException:
        p.send_signal(signal.SIGINT)        # Snakemake then scancels its jobs
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
        raise
    (wd / "snakemake-shipped.out").write_text(out)
    return {"dir": wd, "rc": p.returncode, "out": out, "signalled": signalled,
            "seconds": time.monotonic() - t0}


def warn_each_allocation(cluster, p: subprocess.Popen, ckpts: Path, old: set, log: Path, times: int) -> list[str]:
    """Send USR1 to each of the training's first ``times`` allocations once its own `ddm train` has
    written a checkpoint past where it started (the first: any new checkpoint; the next ones: past the
    step their log says they resumed from), the way SLURM's --signal=USR1@... warns a job before its
    time limit (no --batch: to the job steps, not the batch shell); the SLURM job ids signalled."""
    signalled, seen, deadline = [], {}, time.monotonic() + 300
    while len(signalled) < times and time.monotonic() < deadline and p.poll() is None:
        steps = [int(c.stem.split("-")[1]) for c in set(ckpts.glob("ddm-*/ckpt-*.pt")) - old]
        for job in cluster.jobs():
            if (job["comment"] != "rule_train_wildcards_digits_ddm" or job["state"] != "RUNNING"
                    or job["id"] in signalled):
                continue
            seen.setdefault(job["id"], time.time())
            start = 0
            if signalled:   # a resubmitted job: its own log (written after it started) names its checkpoint
                fresh = log.is_file() and log.stat().st_mtime > seen[job["id"]]
                m = fresh and re.search(r"resuming from \S*ckpt-0*(\d+)\.pt", log.read_text(errors="replace"))
                if not m:
                    continue
                start = int(m.group(1))
            if any(step > start for step in steps):
                subprocess.run(["scancel", "--signal=USR1", job["id"]], check=True)
                signalled.append(job["id"])
        time.sleep(0.1)
    return signalled


STEPS = 60
TARGET = "results/metrics/digits/ddm/nfe2-r0.json"
#: Rules of TARGET's jobs that the shipped profile gives one GPU (the FID jobs run Inception on it).
GPU_RULES = ("train", "sample", "evaluate")


def test_shipped_profile_sbatch_lines(shipped_run):
    out = shipped_run["out"]
    assert shipped_run["rc"] == 0, out[-8000:]
    assert (shipped_run["dir"] / TARGET).exists()
    shipped = yaml.safe_load(SHIPPED.read_text())
    calls = sbatch_calls(out)
    rules = {r for r, _ in calls}
    assert {"train", "sample", "evaluate"} <= rules, rules
    for rule, argv in calls:
        gpu_args = [a for a in argv if a.startswith(("--gres", "--gpus", "--gpus-per"))]
        if rule in GPU_RULES:
            # exactly one GPU, as GRES (optionally typed: gpu:<type>:1)
            assert len(gpu_args) == 1 and re.fullmatch(r"--gres=gpu(:\w+)?:1", gpu_args[0]), (rule, argv)
            assert f"--cpus-per-task={shipped['set-threads'].get(rule, 1)}" in argv, (rule, argv)
            assert not any(a.startswith("--ntasks") for a in argv), (rule, argv)  # issue 373
        else:
            assert gpu_args == [], (rule, argv)
            assert "--ntasks=1" in argv, (rule, argv)
        signals = [a for a in argv if a.startswith("--signal")]
        if rule == "train":     # to the job steps (no "B:"), where ddm train runs under srun
            assert len(signals) == 1 and re.fullmatch(r"--signal=USR1@\d+", signals[0]), argv
        else:
            assert signals == [], (rule, argv)
        assert argv[argv.index("-p") + 1] == "debug"

    # slurmctld really gave the training job the GPU (finished jobs stay for MinJobAge)
    train_id = [j for d, j in submitted(out) if d == "rule_train"][-1]
    show = subprocess.run(["scontrol", "show", "job", train_id], capture_output=True, text=True)
    if show.returncode == 0:
        assert re.search(r"TresPerNode=(gres:)?gpu:1", show.stdout), show.stdout
        assert "JobState=COMPLETED" in show.stdout, show.stdout
    line = next(" ".join(shlex.quote(a) for a in argv) for r, argv in calls if r == "train")
    print(f"\n(b) sbatch line of a train job with the shipped profile:\n{line} --wrap=...")


def test_training_finishes_across_three_allocations(shipped_run):
    wd, out = shipped_run["dir"], shipped_run["out"]
    assert len(shipped_run["signalled"]) == 2, f"signalled {shipped_run['signalled']}, not 2 allocations:\n{out[-6000:]}"
    assert shipped_run["rc"] == 0, out[-8000:]
    assert (wd / "results" / "models" / "digits" / "ddm.pt").exists()
    trains = [j for d, j in submitted(out) if d == "rule_train"]
    assert len(trains) == 3 and trains[:2] == shipped_run["signalled"], (trains, shipped_run["signalled"])
    assert out.count("Trying to restart job") == 2       # preemptible-retries: the global retries are 0
    assert "train" in yaml.safe_load(SHIPPED.read_text())["preemptible-rules"]
    log = (wd / "logs" / "train" / "digits" / "ddm.log").read_text()   # the last attempt's
    step = re.search(rf"resuming from \S*ckpt-\d+\.pt \(step ([1-9]\d*) of {STEPS}\)", log)
    assert step and int(step.group(1)) < STEPS, log[-3000:]
    print(f"\n(b, c) shipped profile, a training across 3 allocations: {shipped_run['seconds']:.0f} s")


# ---------------------------------------------------------------------------------------------
# the machine as it was
# ---------------------------------------------------------------------------------------------
def test_a_killed_sessions_configs_are_removed_and_anothers_kept(tmp_path, monkeypatch):
    """A slurm.conf without its controller stalls every `snakemake` on the machine by about 9 s
    (the SLURM executor plugin runs `scontrol show config` at import): the helper's own configs go
    once none of its daemons runs; another's slurm.conf, or a live cluster's, stays."""
    import slurm_cluster as sc

    conf, gres, pids = tmp_path / "slurm.conf", tmp_path / "gres.conf", tmp_path / "pids"
    monkeypatch.setattr(sc, "SLURM_CONF", conf)
    monkeypatch.setattr(sc, "GRES_CONF", gres)
    monkeypatch.setattr(sc, "PID_FILE", pids)
    ours = sc.MARK + "\nClusterName=ddmtest\n"
    me = Path("/proc/self/comm").read_text().strip()

    for path, text in ((conf, ours), (gres, ours), (pids, f"{me} {os.getpid()}\n")):
        path.write_text(text)
    sc.remove_stale_configs()  # a live daemon (this process stands in for it): nothing goes
    assert conf.exists() and gres.exists() and pids.exists()
    pids.write_text("slurmctld 999999999\n")  # the killed session's
    sc.remove_stale_configs()
    assert not conf.exists() and not gres.exists() and not pids.exists()
    conf.write_text("ClusterName=site\n")  # the machine's own
    sc.remove_stale_configs()
    assert conf.read_text() == "ClusterName=site\n"
