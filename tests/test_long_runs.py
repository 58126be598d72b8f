"""benchmarks/long_run.sh (a run longer than a session, in segments that resume) and
benchmarks/keep_run.sh (a measured run's reports kept for ddm compare), each in a stand-in
repository beside the test: the scripts as shipped, the real Snakemake and ddm of this environment,
and a Snakefile of two short jobs in place of the pipeline's 300."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, tool_env
from test_claims import make_metrics
from test_compare import _run

#: Two jobs of about 3 s, then `all`: enough for a stop to fall inside a job.
SNAKEFILE = """
rule all:
    input: "out/a.txt", "out/b.txt"

rule step:
    output: "out/{name}.txt"
    shell: "sleep 3 && echo {wildcards.name} > {output}"
"""


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository laid out as this one: the two scripts and job_times.py under benchmarks/,
    the workflow profile that makes Snakemake rerun incomplete jobs, and a set-up that links this
    environment as its .venv."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    r = tmp_path / "repo"
    (r / "benchmarks").mkdir(parents=True)
    for name in ("long_run.sh", "keep_run.sh", "job_times.py"):
        shutil.copy(REPO / "benchmarks" / name, r / "benchmarks" / name)
    shutil.copytree(REPO / "profiles", r / "profiles")
    (r / "Snakefile").write_text(SNAKEFILE)
    (r / "setup.sh").write_text(f"#!/usr/bin/env bash\nln -s {BIN.parent} .venv\n")
    (r / "setup.sh").chmod(0o755)
    _git(r, "init", "-q")
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "stand-in")
    return r


def long_run(repo: Path, run: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "benchmarks" / "long_run.sh"), str(run), *args],
                          capture_output=True, text=True, timeout=timeout, env=tool_env())


def segments(run: Path) -> list[dict]:
    lines = (run / "segments.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_a_run_stopped_in_a_job_goes_on_in_the_next_segment(repo, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(["bash", str(repo / "benchmarks" / "long_run.sh"), str(run), "--cores", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=tool_env())
    deadline = time.monotonic() + 120
    while not (run / "segment-1.err").exists() or "rule step" not in (run / "segment-1.err").read_text():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGTERM)  # a session's end: the script and Snakemake together
    p.communicate(timeout=60)
    first = segments(run)
    assert [(s["n"], s["event"]) for s in first] == [("1", "start"), ("1", "end")] and first[1]["rc"] == "stopped", first
    assert first[0]["commit"] and "family" in first[0]["cpu"]
    assert not (run / "out" / "b.txt").exists()

    r = long_run(repo, run)  # the next segment: the first call's arguments, the stopped job again
    assert r.returncode == 0, r.stdout + r.stderr
    assert (run / "out" / "a.txt").read_text() == "a\n" and (run / "out" / "b.txt").read_text() == "b\n"
    second = segments(run)[2:]
    assert [(s["n"], s["event"], s["rc"]) for s in second] == [("2", "start", ""), ("2", "end", "0")]
    assert "--cores\n1\n" == (run / "long_run.args").read_text()
    assert "over 2 segments" in r.stdout and (run / "setup.log").exists()
    other = long_run(repo, run, "--cores", "2")  # a segment with other arguments would be another run
    assert other.returncode == 2 and "was started with other arguments (--cores 1 )" in other.stderr, other.stderr
    assert len(segments(run)) == 4


def test_a_foreign_folder_is_refused(repo, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    r = long_run(repo, foreign)
    assert r.returncode == 2 and "is neither empty nor a run of this script" in r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["x"]


def test_keep_run_keeps_what_compare_reads(repo, tmp_path):
    (repo / ".venv").symlink_to(BIN.parent)  # ./setup.sh's environment
    metrics = make_metrics()
    run = _run(tmp_path, "measured", metrics)
    (run / "reports" / "tables.tex").write_text("tables")
    (run / "segments.tsv").write_text("n\tevent\n")
    (run / "logs").mkdir()
    (run / "logs" / "big.log").write_text("not kept")
    keep = ["bash", str(repo / "benchmarks" / "keep_run.sh")]
    r = subprocess.run([*keep, str(run), "first"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    kept = repo / "benchmarks" / "runs" / "first"
    files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert metrics.get("fig3") and files == sorted(["reports/metrics.json", "reports/tables.tex", "segments.tsv",
                                                    *(f"results/metrics/{ds}/fig3.json" for ds in metrics["fig3"])]), files
    assert json.loads((kept / "reports/metrics.json").read_text()) == json.loads((run / "reports/metrics.json").read_text())
    c = subprocess.run([str(BIN / "ddm"), "compare", str(kept), str(run)], capture_output=True, text=True, timeout=120)
    assert c.returncode == 0 and "same evidence" in c.stdout, c.stdout + c.stderr
    again = subprocess.run([*keep, str(run), "first"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists: give another NAME" in again.stderr
    unfinished = subprocess.run([*keep, str(tmp_path / "nothing"), "second"], capture_output=True, text=True, timeout=120)
    assert unfinished.returncode == 2 and "reports/metrics.json is missing" in unfinished.stderr
    assert not (repo / "benchmarks" / "runs" / "second").exists() and not list((repo / "benchmarks").glob(".keep.*"))
    text = (run / "reports" / "metrics.json").read_text()
    assert "10." in text
    (run / "reports" / "metrics.json").write_text(text.replace("10.", "11.", 1))  # a number changed, its checksum not
    corrupt = subprocess.run([*keep, str(run), "third"], capture_output=True, text=True, timeout=120)
    assert corrupt.returncode == 1 and "does not pass `ddm compare`" in corrupt.stderr, corrupt.stderr
    assert not (repo / "benchmarks" / "runs" / "third").exists() and not list((repo / "benchmarks").glob(".keep.*"))
