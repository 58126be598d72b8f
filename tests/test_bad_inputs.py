"""Bad input through the real command line (``python -m ddm``) and ``snakemake -n``: every case
must end with the documented exit code (ddm/cli.py: 2 usage/config/input, 1 runtime), one line
``ddm <subcommand>: <message>`` naming the offending value, no traceback, and no output file
written or changed. The files are built here with the library (an untrained tiny model, digits
images, JSON files); nothing is trained.

The table of cases runs the entry point in this process (``ddm.cli.main(argv)`` in the work
folder, stdout and stderr captured: the code ``python -m ddm`` runs, without a torch import per
case); the tests that need a real process (a size limit, a private mount, the traceback of -v)
and one case of each exit code (``test_a_subprocess_gives_the_same_lines``) run ``python -m ddm``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import resource
import shlex
import shutil
import stat
import subprocess
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from conftest import BIN, make_workdir, merge_params, run_snakemake, tiny_params, tool_env
from ddm.io import load_torch

#: The exit codes documented in ddm/cli.py (ddm/cli_base.py's EXIT_*).
USAGE, FAILURE = 2, 1
ENV = {"OMP_NUM_THREADS": "1", "DDM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
OLD = b"an output of an earlier run"


def run_cli(work: Path, argv: list[str], *, env: dict | None = None, prefix: list[str] = (),
            preexec_fn=None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "ddm", *argv]
    return subprocess.run(cmd, cwd=work, env={**os.environ, **ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def run_main(work: Path, argv: list[str], *, env: dict | None = None) -> subprocess.CompletedProcess:
    """``ddm.cli.main(argv)`` in ``work`` with ``env`` set, as ``run_cli`` would run it: the exit
    code (``main``'s return value or SystemExit's; an uncaught exception gives Python's 1 and its
    traceback on stderr) and the captured stdout and stderr."""
    from ddm import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update({**ENV, **(env or {})})
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # what the interpreter would print for an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def snapshot(work: Path) -> dict:
    """Every file and folder under ``work``: (size, mtime) of files, None for folders."""
    return {str(p.relative_to(work)): (None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in work.rglob("*") if "__pycache__" not in p.parts}


def assert_one_line_error(r: subprocess.CompletedProcess, sub: str, code: int, needles, *,
                          max_lines: int = 1) -> str:
    """Exit code ``code``, no traceback, and the last line(s) of stderr ``ddm <sub>: ...`` (one per
    error; several only where params.yaml has several) naming every needle; returns them."""
    out = f"rc={r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert r.returncode == code, out
    assert "Traceback" not in r.stderr, out
    assert "weights_only" not in r.stderr, out  # never advise weights_only=False
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"ddm {sub}: ")]
    assert 1 <= len(lines) <= max_lines, out
    assert r.stderr.rstrip().splitlines()[-len(lines):] == lines, out
    message = "\n".join(lines)
    for needle in needles:
        assert needle in message, f"{needle!r} not in the message:\n{out}"
    return message


# --------------------------------------------------------------------------- the files
def _model_blob(params: dict, method: str, seed: int = 0) -> dict:
    from ddm.config import resolve
    from ddm.experiment import build
    from ddm.modelfile import model_blob

    exp = build(resolve(params, "digits", method))
    torch.manual_seed(seed)
    return model_blob(exp, exp.make_model(), checkpoint="none")  # what `ddm train` writes


def _write_models(work: Path, params: dict) -> None:
    from ddm.io import save_torch

    m = work / "models"
    good = _model_blob(params, "ddm")
    save_torch(good, m / "ddm.pt")
    save_torch(_model_blob(params, "ddpm"), m / "ddpm.pt")
    raw = (m / "ddm.pt").read_bytes()
    (m / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (m / "random.pt").write_bytes(os.urandom(4096))
    (m / "empty.pt").write_bytes(b"")
    save_torch(torch.zeros(3), m / "tensor.pt")
    save_torch({**good, "model_kwargs": {**good["model_kwargs"], "ch": 16}}, m / "mismatch.pt")


def _write_samples(work: Path, images: torch.Tensor) -> None:
    from ddm.io import save_torch

    from ddm.shards import shard_meta

    s = work / "samples"
    x = images[:8]
    save_torch(x, s / "ok.pt", meta=shard_meta("digits", "ddm", 2, 0, 8, "0" * 64, (0, 8), None))  # EVAL's set
    save_torch(x.float() / 255, s / "float.pt")
    save_torch(x.expand(-1, 3, -1, -1).contiguous(), s / "rgb.pt")
    save_torch(torch.zeros(8, 1, 16, 16, dtype=torch.uint8), s / "res16.pt")
    save_torch(x[:, 0], s / "three_dims.pt")
    save_torch(x[:1], s / "one.pt")
    raw = (s / "ok.pt").read_bytes()
    (s / "truncated.pt").write_bytes(raw[: len(raw) - 200])
    (s / "random.pt").write_bytes(os.urandom(2048))
    (s / "empty.pt").write_bytes(b"")
    save_torch(torch.zeros(8, 1, 16, 16, dtype=torch.uint8), work / "data" / "res16.pt")


GOOD_METRIC = {"dataset": "digits", "method": "ddm", "nfe": 2, "repeat": 0, "fid": 12.5, "num_samples": 70,
               "extractor": "digits-classifier", "reference": "reference.npz (n=1347)"}
GOOD_METRICS = {"preset": "embedded", "ht": "constant", "table1_methods": ["ddm"], "datasets": {"digits": {
    "extractor": "digits-classifier", "reference": "reference.npz (n=1347)",
    "results": {"ddm": {"2": {"values": [12.5, 13.5], "mean": 13.0, "std": 0.71, "n": 2, "num_samples": 70}}},
    "table1": {"2": {"best": "ddm", "second": None, "marker": "untested"}}}}}


def _write_json(work: Path) -> None:
    from ddm.io import save_json

    def put(rel, obj):  # an object as its writer writes it (with its checksum); text as it is
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, dict):
            save_json(obj, p)
        else:
            p.write_text(obj if isinstance(obj, str) else json.dumps(obj))

    put("fid/extractor.json", {"extractor": "digits-classifier", "weights": "fid/weights.pt"})
    put("fid/extractor_bad.json", {"extractor": "digits-classifier"})
    (work / "fid" / "reference_bad.npz").write_bytes(os.urandom(1024))
    put("metrics/good.json", GOOD_METRIC)
    put("metrics/no_fid.json", {k: v for k, v in GOOD_METRIC.items() if k != "fid"})
    put("metrics/fid_text.json", {**GOOD_METRIC, "fid": "twelve"})
    put("metrics/not_json.json", '{"dataset": "digits",\n "fid": 12.5,,\n}')
    put("metrics/copy.json", (work / "metrics" / "good.json").read_text())  # the same bytes, another name
    put("metrics/same_set.json", {**GOOD_METRIC, "fid": 14.0})  # digits/ddm NFE 2 repeat 0 again
    put("metrics/ghost.json", {**GOOD_METRIC, "method": "ghost"})
    put("metrics/negative.json", {**GOOD_METRIC, "repeat": 1, "fid": -5.0})
    put("metrics/nan.json", {**GOOD_METRIC, "repeat": 1, "fid": float("nan")})  # NaN, as json writes it
    put("reports/good.json", GOOD_METRICS)
    nan_mean = copy.deepcopy(GOOD_METRICS)
    nan_mean["datasets"]["digits"]["results"]["ddm"]["2"]["mean"] = float("nan")
    put("reports/nan_mean.json", nan_mean)
    put("reports/no_datasets.json", {k: v for k, v in GOOD_METRICS.items() if k != "datasets"})
    put("reports/list.json", [1, 2, 3])
    bad = copy.deepcopy(GOOD_METRICS)
    bad["datasets"]["digits"]["results"]["ddm"]["2"]["mean"] = "low"
    put("reports/mean_text.json", bad)
    put("reports/published_bad.csv", "table,dataset,method\n1,cifar10,DDPM\n")
    put("reports/fig3_bad.json", {"nfe": 10, "num_samples": 4, "curves": {"ddm": {"t": [1.0]}}})


def _write_params_variants(work: Path) -> None:
    base = tiny_params()
    cfg = work / "cfg"
    cfg.mkdir()
    (cfg / "syntax.yaml").write_text((work / "params.yaml").read_text().replace("seed: 0", "seed: [0", 1))
    (cfg / "empty.yaml").write_text("")
    (cfg / "unknown_key.yaml").write_text(yaml.safe_dump({**base, "bogus": 1}, sort_keys=False))
    misfit = copy.deepcopy(base)
    misfit["methods"]["ddpm"]["sampler"] = "ddm"
    (cfg / "misfit.yaml").write_text(yaml.safe_dump(misfit, sort_keys=False))
    folder = copy.deepcopy(base)
    folder["conditioned"] = False  # the conditioned tasks need the digits block
    folder["presets"]["embedded"] = {"imagefolder": {**base["presets"]["embedded"]["digits"],
                                                      "source": "no-such-folder"}}
    (cfg / "imagefolder.yaml").write_text(yaml.safe_dump(folder, sort_keys=False))
    text = yaml.safe_dump(base, sort_keys=False)
    assert text.splitlines()[1].startswith("ht: ")
    (cfg / "duplicate.yaml").write_text(text + "ht: linear\n")  # line 2 and the last line
    for name, overrides in PARAMS_VARIANTS.items():
        (cfg / f"{name}.yaml").write_text(yaml.safe_dump(merge_params(base, overrides), sort_keys=False))


#: Params files of values YAML and the schema's types admit but that cannot run: cfg/<name>.yaml.
PARAMS_VARIANTS = {
    "nan_lr": {"presets.embedded.digits.train.lr": float("nan")},
    "inf_t_end": {"methods.ddpm.t_end": float("inf")},
    "huge_nfe": {"presets.embedded.digits.nfe": [10 ** 12]},
    "huge_num_samples": {"presets.embedded.digits.fid.num_samples": 10 ** 12},
    "float_steps": {"presets.embedded.digits.train.steps": 1e30},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A workdir with the tiny params and every good and bad file the cases name."""
    from ddm.validation import load_params
    from ddm.datasets import DATASETS, load_dataset
    from ddm.io import save_torch

    work = make_workdir(tmp_path_factory.mktemp("bad-inputs"))
    params = load_params(work / "params.yaml")
    options = {"resolution": 8} if "resolution" in DATASETS["digits"].options else {}
    images = load_dataset("digits", work / "data", "train", **options)
    save_torch(images[:256].contiguous(), work / "data" / "digits.pt")
    _write_models(work, params)
    _write_samples(work, images)
    _write_json(work)
    _write_params_variants(work)
    (work / "out").mkdir()
    (work / "out" / "existing.pt").write_bytes(OLD)
    return work


# --------------------------------------------------------------------------- the table
class Case(NamedTuple):
    argv: str
    code: int
    needles: tuple
    env: dict = {}


SAMPLE = "sample --dataset digits --method ddm --model models/ddm.pt --nfe 2 --num-samples 4 --out out/existing.pt"
EVAL = ("evaluate --samples samples/ok.pt --reference fid/reference.npz --extractor fid/extractor.json "
        "--dataset digits --method ddm --nfe 2 --repeat 0 --out out/metric.json")
TRAIN = "train --dataset digits --method ddm --data data/digits.pt --checkpoints ckpt --out out/model.pt"
NO_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


def _swap(cmd: str, option: str, value: str) -> str:
    """``cmd`` with ``option``'s value replaced (or the option added)."""
    parts = shlex.split(cmd)
    if option in parts:
        parts[parts.index(option) + 1] = value
    else:
        parts += [option, value]
    return shlex.join(parts)


CASES: dict[str, Case] = {
    # option values
    "nfe-0": Case(_swap(SAMPLE, "--nfe", "0"), USAGE, ("--nfe", "got 0")),
    "nfe-not-an-integer": Case(_swap(SAMPLE, "--nfe", "ten"), USAGE, ("--nfe", "'ten'")),
    "num-samples-0": Case(_swap(SAMPLE, "--num-samples", "0"), USAGE, ("--num-samples", "got 0")),
    "num-samples-beyond-seed-block": Case(_swap(SAMPLE, "--num-samples", "1000001"), USAGE, ("--num-samples",)),
    "batch-size-0": Case(_swap(SAMPLE, "--batch-size", "0"), USAGE, ("--batch-size", "got 0")),
    "repeat-negative": Case(_swap(SAMPLE, "--repeat", "-1"), USAGE, ("--repeat", "got -1")),
    "evaluate-nfe-0": Case(_swap(EVAL, "--nfe", "0"), USAGE, ("--nfe", "got 0")),
    "fig3-num-samples-0": Case("fig3 --models models/ddm.pt --num-samples 0 --out out/f.json", USAGE,
                               ("--num-samples", "got 0")),
    "device-without-cuda": Case(_swap(SAMPLE, "--device", NO_CUDA), USAGE, ("--device", NO_CUDA, "--device cpu")),
    "train-device-without-cuda": Case(_swap(TRAIN, "--device", NO_CUDA), USAGE, ("--device", NO_CUDA)),
    "device-not-a-name": Case(_swap(SAMPLE, "--device", "gpu0"), USAGE, ("--device", "'gpu0'")),
    "ddm-threads-not-a-number": Case(SAMPLE, USAGE, ("DDM_THREADS", "'two'"), {"DDM_THREADS": "two"}),
    # model files
    "model-random-bytes": Case(_swap(SAMPLE, "--model", "models/random.pt"), USAGE, ("models/random.pt", "ddm train")),
    "model-empty": Case(_swap(SAMPLE, "--model", "models/empty.pt"), USAGE, ("models/empty.pt", "empty")),
    "model-truncated": Case(_swap(SAMPLE, "--model", "models/truncated.pt"), USAGE, ("models/truncated.pt",)),
    "model-missing": Case(_swap(SAMPLE, "--model", "models/nope.pt"), USAGE, ("models/nope.pt", "does not exist")),
    "model-is-a-tensor": Case(_swap(SAMPLE, "--model", "models/tensor.pt"), USAGE, ("models/tensor.pt", "ddm.model/1")),
    "model-weights-do-not-fit": Case(_swap(SAMPLE, "--model", "models/mismatch.pt"), USAGE, ("models/mismatch.pt",)),
    "model-of-another-method": Case(_swap(SAMPLE, "--model", "models/ddpm.pt"), USAGE,
                                    ("models/ddpm.pt", "digits/ddm", "retrain")),
    "fig3-model-random-bytes": Case("fig3 --models models/ddm.pt models/random.pt --nfe 2 --num-samples 2 "
                                    "--out out/existing.pt", USAGE, ("models/random.pt",)),
    # sample and data files
    "evaluate-rgb-samples-for-digits": Case(_swap(EVAL, "--samples", "samples/rgb.pt"), USAGE,
                                            ("samples/rgb.pt", "3 channels", "has 1")),
    "evaluate-wrong-resolution": Case(_swap(EVAL, "--samples", "samples/res16.pt"), USAGE,
                                      ("samples/res16.pt", "16x16", "8x8")),
    "evaluate-float-samples": Case(_swap(EVAL, "--samples", "samples/float.pt"), USAGE,
                                   ("samples/float.pt", "torch.float32", "uint8")),
    "evaluate-one-sample": Case(_swap(EVAL, "--samples", "samples/one.pt"), USAGE, ("samples/one.pt", "at least 2")),
    "evaluate-truncated-samples": Case(_swap(EVAL, "--samples", "samples/truncated.pt"), USAGE,
                                       ("samples/truncated.pt", "ddm sample")),
    "evaluate-reference-random-bytes": Case(_swap(EVAL, "--reference", "fid/reference_bad.npz"), USAGE,
                                            ("fid/reference_bad.npz", "ddm refstats")),
    "evaluate-extractor-lacks-weights": Case(_swap(EVAL, "--extractor", "fid/extractor_bad.json"), USAGE,
                                             ("fid/extractor_bad.json", "weights: missing")),
    "evaluate-unknown-method": Case(_swap(EVAL, "--method", "dddm"), USAGE, ("'dddm'", "ddpm")),
    "evaluate-dataset-not-in-preset": Case(_swap(EVAL, "--dataset", "cifar10"), USAGE, ("'cifar10'", "digits")),
    "grid-float-samples": Case("grid --samples samples/float.pt --out out/g.png", USAGE, ("samples/float.pt", "float32")),
    "grid-three-dims": Case("grid --samples samples/three_dims.pt --out out/g.png", USAGE, ("samples/three_dims.pt",
                                                                                             "(8, 8, 8)")),
    "grid-random-bytes": Case("grid --samples samples/random.pt --out out/g.png", USAGE, ("samples/random.pt",)),
    "grid-empty": Case("grid --samples samples/empty.pt --out out/g.png", USAGE, ("samples/empty.pt", "empty")),
    "refstats-float-data": Case("refstats --data samples/float.pt --extractor fid/extractor.json --out out/r.npz",
                                USAGE, ("samples/float.pt", "uint8")),
    "train-data-wrong-resolution": Case(_swap(TRAIN, "--data", "data/res16.pt"), USAGE, ("data/res16.pt", "16x16")),
    # JSON given to stats / report / figures / fig3-plot
    "stats-metric-without-fid": Case("stats --inputs metrics/good.json metrics/no_fid.json --out out/existing.pt",
                                     USAGE, ("metrics/no_fid.json", "fid: missing", "ddm evaluate")),
    "stats-fid-is-text": Case("stats --inputs metrics/fid_text.json --out out/m.json", USAGE,
                              ("metrics/fid_text.json", "fid: expected number, got a string")),
    "stats-not-json": Case("stats --inputs metrics/not_json.json --out out/m.json", USAGE,
                           ("metrics/not_json.json:2:", "not valid JSON")),
    "stats-missing-file": Case("stats --inputs metrics/nope.json --out out/m.json", USAGE,
                               ("metrics/nope.json", "does not exist")),
    "report-without-datasets": Case("report --metrics reports/no_datasets.json --out out/t.tex", USAGE,
                                    ("reports/no_datasets.json", "datasets: missing", "ddm stats")),
    "report-a-list": Case("report --metrics reports/list.json --out out/t.tex", USAGE,
                          ("reports/list.json", "expected an object, got a list")),
    "report-mean-is-text": Case("report --metrics reports/mean_text.json --out out/t.tex", USAGE,
                                ("datasets/digits/results/ddm/2/mean",)),
    "report-published-without-columns": Case("report --metrics reports/good.json --published "
                                             "reports/published_bad.csv --out out/t.tex", USAGE,
                                             ("reports/published_bad.csv", "nfe")),
    "figures-unknown-dataset": Case("figures --metrics reports/good.json --dataset cifar10 --out out/f.png", USAGE,
                                    ("'cifar10'", "digits")),
    "fig3-plot-without-mse": Case("fig3-plot --curves reports/fig3_bad.json --out out/f.png", USAGE,
                                  ("reports/fig3_bad.json", "curves/ddm/mse: missing")),
    # params.yaml and names from it
    "params-yaml-syntax": Case(SAMPLE + " --params cfg/syntax.yaml", USAGE,
                               ("cfg/syntax.yaml:4:", "YAML syntax", "starts at line 3")),
    "params-empty": Case(SAMPLE + " --params cfg/empty.yaml", USAGE, ("cfg/empty.yaml", "empty")),
    "params-missing": Case(SAMPLE + " --params cfg/nope.yaml", USAGE, ("cfg/nope.yaml",)),
    "params-sampler-misfit": Case(_swap(SAMPLE, "--method", "ddpm") + " --params cfg/misfit.yaml", USAGE,
                                  ("methods/ddpm", "sampler 'ddm'", "process 'vp'", "vp_em")),
    "prepare-dataset-not-in-preset": Case("prepare --dataset cifar10 --out out/c.pt", USAGE, ("'cifar10'", "digits")),
    "extractor-dataset-not-in-preset": Case("extractor --dataset cifar10 --out out/e.json", USAGE, ("'cifar10'",)),
    "train-unknown-method": Case(_swap(TRAIN, "--method", "nosuch"), USAGE, ("'nosuch'",)),
    # params values that pass YAML and the schema's types but cannot run; the file read is named
    "params-duplicate-key": Case("prepare --dataset digits --out out/p.pt --params cfg/duplicate.yaml", USAGE,
                                 ("cfg/duplicate.yaml:", "duplicate key 'ht'", "first at line 2")),
    "params-nan-lr": Case("prepare --dataset digits --out out/p.pt --params cfg/nan_lr.yaml", USAGE,
                          ("cfg/nan_lr.yaml: presets/embedded/digits/train/lr", "nan", "finite")),
    "params-inf-t-end": Case(SAMPLE + " --params cfg/inf_t_end.yaml", USAGE,
                             ("cfg/inf_t_end.yaml: methods/ddpm/t_end", "inf", "finite")),
    "params-nfe-beyond-memory": Case("prepare --dataset digits --out out/p.pt --params cfg/huge_nfe.yaml", USAGE,
                                     ("cfg/huge_nfe.yaml: presets/embedded/digits/nfe", "NFE 1000000000000",
                                      "7.3 TiB", "2.0 TiB", "DDM_MEMORY")),
    "params-num-samples-beyond-memory": Case(SAMPLE + " --params cfg/huge_num_samples.yaml", USAGE,
                                             ("presets/embedded/digits/fid/num_samples", "1x8x8", "TiB")),
    "params-steps-1e30": Case(TRAIN + " --params cfg/float_steps.yaml", USAGE,
                              ("cfg/float_steps.yaml: presets/embedded/digits/train/steps", "1e+30", "integer")),
    "params-file-named": Case(_swap(SAMPLE, "--method", "ddpm") + " --params cfg/misfit.yaml", USAGE,
                              ("cfg/misfit.yaml: methods/ddpm", "sampler 'ddm'")),
    "ddm-params-file-named": Case(_swap(SAMPLE, "--method", "ddpm"), USAGE, ("cfg/misfit.yaml: methods/ddpm",),
                                  {"DDM_PARAMS": "cfg/misfit.yaml"}),
    "nfe-beyond-memory": Case(_swap(SAMPLE, "--nfe", "1000000000000"), USAGE,
                              ("--nfe", "NFE 1000000000000", "7.3 TiB", "this machine's")),
    "num-samples-beyond-memory": Case(_swap(SAMPLE, "--num-samples", "1000000"), USAGE,
                                      ("--num-samples 1000000", "1x8x8", "DDM_MEMORY=1M", "at most 1,820"),
                                      {"DDM_MEMORY": "1M"}),
    "ddm-memory-not-a-size": Case(SAMPLE, USAGE, ("DDM_MEMORY='lots'",), {"DDM_MEMORY": "lots"}),
    # metric files that are not results, and a table cell that is not a number
    "stats-same-file-twice": Case("stats --inputs metrics/good.json metrics/good.json --out out/m.json", USAGE,
                                  ("metrics/good.json", "the same file")),
    "stats-same-content": Case("stats --inputs metrics/good.json metrics/copy.json --out out/m.json", USAGE,
                               ("metrics/good.json and metrics/copy.json", "identical")),
    "stats-same-sample-set": Case("stats --inputs metrics/good.json metrics/same_set.json --out out/m.json", USAGE,
                                  ("metrics/same_set.json", "digits/ddm NFE 2 repeat 0")),
    "stats-method-not-in-params": Case("stats --inputs metrics/good.json metrics/ghost.json --out out/m.json",
                                       USAGE, ("metrics/ghost.json", "'ghost'", "params.yaml", "ddpm")),
    "stats-negative-fid": Case("stats --inputs metrics/good.json metrics/negative.json --out out/m.json", USAGE,
                               ("metrics/negative.json", "fid -5.0")),
    "stats-nan-fid": Case("stats --inputs metrics/good.json metrics/nan.json --out out/m.json", USAGE,
                          ("metrics/nan.json", "fid nan")),
    "report-nan-mean": Case("report --metrics reports/nan_mean.json --out out/t.tex", USAGE,
                            ("reports/nan_mean.json", "datasets/digits/results/ddm/2/mean", "not a finite number")),
    # outputs
    "out-is-a-folder": Case(_swap(SAMPLE, "--out", "out"), USAGE, ("out", "not a regular file")),
    "out-is-a-device": Case(_swap(SAMPLE, "--out", "/dev/full"), USAGE, ("/dev/full", "not a regular file")),
    "out-below-a-file": Case(_swap(SAMPLE, "--out", "out/existing.pt/s.pt"), USAGE, ("out/existing.pt", "not a folder")),
    # runtime: a missing download (here a missing image folder)
    "prepare-missing-image-folder": Case("prepare --dataset imagefolder --params cfg/imagefolder.yaml "
                                         "--out out/i.pt", FAILURE, ("no-such-folder",)),
}
#: The same config error exits with the same code in every subcommand that reads params.yaml.
SAME_CODE = {
    "prepare": "prepare --dataset digits --out out/p.pt",
    "extractor": "extractor --dataset digits --out out/e.json",
    "train": TRAIN,
    "sample": SAMPLE,
    "evaluate": EVAL,
    "stats": "stats --inputs metrics/good.json --out out/m.json",
}
for _sub, _cmd in SAME_CODE.items():
    CASES[f"unknown-key-{_sub}"] = Case(_cmd + " --params cfg/unknown_key.yaml", USAGE, ("'bogus'", "allowed:"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(work, case):
    c = CASES[case]
    argv = shlex.split(c.argv)
    before = snapshot(work)
    r = run_main(work, argv, env=c.env)
    assert_one_line_error(r, argv[0], c.code, c.needles)
    assert snapshot(work) == before, "a failing command wrote or changed a file"
    assert (work / "out" / "existing.pt").read_bytes() == OLD
    if "/dev/full" in argv:
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("case", ["model-random-bytes", "prepare-missing-image-folder"])
def test_a_subprocess_gives_the_same_lines(work, case):
    """``python -m ddm`` prints what the in-process run of the same case prints, with its exit code."""
    argv = shlex.split(CASES[case].argv)
    real, here = run_cli(work, argv, env=CASES[case].env), run_main(work, argv, env=CASES[case].env)
    assert real.returncode == here.returncode
    assert assert_one_line_error(real, argv[0], CASES[case].code, CASES[case].needles) == \
        assert_one_line_error(here, argv[0], CASES[case].code, CASES[case].needles)


def test_verbose_shows_the_traceback(work):
    r = run_cli(work, ["-v", *shlex.split(CASES["model-random-bytes"].argv)])
    assert r.returncode == USAGE and "Traceback" in r.stderr, r.stderr[-2000:]
    assert r.stderr.rstrip().splitlines()[-1].startswith("ddm sample: model file models/random.pt")
    assert "weights_only" not in r.stderr.splitlines()[-1]


def test_good_inputs_pass(work, tmp_path):
    """The fixtures' good files work: the bad cases fail for the reason they name."""
    out = tmp_path / "s.pt"
    r = run_cli(work, shlex.split(_swap(SAMPLE, "--out", str(out))))
    assert r.returncode == 0, r.stderr[-3000:]
    from ddm.io import load_torch

    x = load_torch(out, "sample file", "ddm sample")
    assert x.dtype == torch.uint8 and tuple(x.shape) == (4, 1, 8, 8)
    for argv in (f"grid --samples {out} --out {tmp_path / 'g.png'}",
                 f"report --metrics reports/good.json --out {tmp_path / 't.tex'}",
                 f"figures --metrics reports/good.json --dataset digits --out {tmp_path / 'f.png'}",
                 f"stats --inputs metrics/good.json --out {tmp_path / 'm.json'}"):
        r = run_main(work, shlex.split(argv))
        assert r.returncode == 0, (argv, r.stderr[-3000:])


# --------------------------------------------------------------------------- unwritable outputs
def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_fails_with_code_1_and_leaves_the_old_file(work):
    """A write that fails midway (RLIMIT_FSIZE: EFBIG, as a full disk's ENOSPC) names the file."""
    before = snapshot(work)
    r = run_cli(work, shlex.split(_swap(SAMPLE, "--num-samples", "200")), preexec_fn=_limit_file_size(4096))
    assert_one_line_error(r, "sample", FAILURE, ("cannot write out/existing.pt", "File too large"))
    assert snapshot(work) == before
    assert (work / "out" / "existing.pt").read_bytes() == OLD


def _private_tmpfs(options: str, folder: Path) -> list[str] | None:
    """A command prefix that runs the command in a private mount namespace with a tmpfs mounted
    on ``folder`` (gone when the command ends); None where that is not possible (not root)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return None
    mount = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))}"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True).returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh"]


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_unwritable_output_folder_fails_with_code_1(work, how):
    """A read-only output folder (found before any work) and a truly full one (ENOSPC)."""
    target = work / "mnt"
    target.mkdir(exist_ok=True)
    cmd = _swap(SAMPLE, "--out", "mnt/s.pt")
    if how == "read-only" and os.geteuid() != 0:
        target.chmod(0o555)
        try:
            r = run_cli(work, shlex.split(cmd))
        finally:
            target.chmod(0o755)
        needles = ("cannot write mnt/s.pt", "Permission denied")
    else:
        prefix = _private_tmpfs("ro,size=64k" if how == "read-only" else "size=4k", target)
        if prefix is None:
            pytest.skip("needs root and unshare/mount for a private tmpfs")
        if how == "full":  # 400 samples of 8x8 are more than the 4 KiB the folder holds
            cmd = _swap(cmd, "--num-samples", "400")
        r = run_cli(work, shlex.split(cmd), prefix=prefix)
        needles = ("cannot write mnt/s.pt", "Read-only file system" if how == "read-only" else "No space left")
    assert_one_line_error(r, "sample", FAILURE, needles)
    assert not list(target.iterdir())


# --------------------------------------------------------------------------- snakemake -n and ddm agree
SNAKEMAKE_CASES = {
    "unknown-key": ({"bogus": 1}, ("'bogus'", "allowed:", "solver_study")),
    "vp-with-the-ddm-sampler": ({"methods.ddpm.sampler": "ddm"},
                                ("methods/ddpm", "sampler 'ddm'", "process 'vp'", "vp_ancestral, vp_em")),
    "ddm-with-ve_em": ({"methods.ddm.sampler": "ve_em"},
                       ("methods/ddm", "sampler 've_em'", "process 'ddm'", "ddim, ddm, ddm_deterministic, dpmpp_2m")),
    "lambda-grid-on-linear-ht": ({"ablation_methods.ht_linear.grid": "lambda"},
                                 ("ablation_methods/ht_linear", "grid 'lambda'", "ht 'linear'", "Gaussian")),
    "ddim-on-linear-ht": ({"ht": "linear", "solver_study": True},
                          ("solver_methods/ddm_ddim", "sampler 'ddim'", "ht 'linear'", "ddm, ddm_deterministic")),
    "override-misfit": ({"presets.embedded.digits.method_overrides.sde": {"sampler": "vp_em"}},
                        ("methods/sde", "method_overrides/sde", "sampler 'vp_em'", "process 've'", "ve_em")),
    "yaml-syntax": (None, ("params.yaml:4:", "YAML syntax", "starts at line 3")),
    "duplicate-key": (None, ("params.yaml:", "duplicate key 'ht'", "first at line 2")),
    "nan-lr": ({"presets.embedded.digits.train.lr": float("nan")},
               ("params.yaml: presets/embedded/digits/train/lr", "nan", "finite")),
    "nfe-beyond-memory": ({"presets.embedded.digits.nfe": [10 ** 12]},
                          ("params.yaml: presets/embedded/digits/nfe", "NFE 1000000000000", "7.3 TiB", "2.0 TiB")),
    "steps-1e30": ({"presets.embedded.digits.train.steps": 1e30},
                   ("params.yaml: presets/embedded/digits/train/steps", "1e+30", "integer")),
}
#: The cases whose params.yaml is the tiny one with its text edited (not a parse of overrides).
TEXT_EDITS = {
    "yaml-syntax": lambda lines: lines[:2] + ["seed: [0"] + lines[3:],
    "duplicate-key": lambda lines: lines + ["ht: linear"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SNAKEMAKE_CASES))
def test_config_errors_stop_snakemake_and_ddm_at_once(workdir_factory, case):
    overrides, needles = SNAKEMAKE_CASES[case]
    work = workdir_factory(overrides)
    if case in TEXT_EDITS:
        text = (work / "params.yaml").read_text().splitlines()
        (work / "params.yaml").write_text("\n".join(TEXT_EDITS[case](text)) + "\n")
    before = snapshot(work)
    dry = run_snakemake(work, "-n", "all", timeout=180)
    msg = dry.output[dry.output.find("params.yaml"):]
    assert dry.returncode != 0, dry.output[-3000:]
    assert "Traceback" not in dry.output and "Failed validating" not in dry.output, dry.output[-3000:]
    assert len(dry.output.strip().splitlines()) <= 8, dry.output[-3000:]
    assert "keep_last" not in dry.output, dry.output[-3000:]  # steps-1e30: the message names steps
    for needle in needles:
        assert needle in msg, f"{needle!r} not in the error of `snakemake -n`:\n{dry.output[-3000:]}"
    assert "Job stats" not in dry.output

    method = "ddm_ddim" if case == "ddim-on-linear-ht" else "ddpm"
    cli = run_main(work, shlex.split(_swap(_swap(SAMPLE, "--method", method), "--out", "s.pt")))
    assert_one_line_error(cli, "sample", USAGE, needles, max_lines=4)  # ddim-on-linear-ht: 4 variants
    assert not (work / "s.pt").exists()
    assert {k: v for k, v in snapshot(work).items() if not k.startswith(".snakemake")} == before


@pytest.mark.slow
def test_a_switched_off_misfit_does_not_stop_a_run(workdir_factory):
    """`dvc exp run -S ht=linear` with the solver study off: the DDIM variants (h_t = c only)
    are not run, so the config is valid and the dry run lists the jobs."""
    work = workdir_factory({"ht": "linear"})
    dry = run_snakemake(work, "-n", "all", timeout=180)
    assert dry.returncode == 0, dry.output[-3000:]
    assert "Job stats" in dry.output


def test_exit_codes_are_the_documented_ones():
    from ddm import cli, cli_base
    from ddm.training import PREEMPT_EXIT_CODE

    assert (cli_base.EXIT_FAILURE, cli_base.EXIT_USAGE, cli_base.EXIT_PREEMPTED) == (FAILURE, USAGE, PREEMPT_EXIT_CODE)
    for code in (FAILURE, USAGE, PREEMPT_EXIT_CODE):
        assert f"\n   {code:>2}   " in cli.__doc__, code


# --------------------------------------------------------------------------- --configfile / --config
CONFIGFILE_CASES = {
    # (files under cfg/, Snakemake's arguments, what the message names)
    "configfile-nfe-beyond-memory": ({"over.yaml": "presets:\n  embedded:\n    digits:\n      nfe: [1000000000000]\n"},
                                     ["--configfile", "cfg/over.yaml"],
                                     ("cfg/over.yaml:4: presets/embedded/digits/nfe", "NFE 1000000000000")),
    "configfile-duplicate-key": ({"dup.yaml": "ht: linear\nseed: 1\nht: exp\n"}, ["--configfile", "cfg/dup.yaml"],
                                 ("cfg/dup.yaml:3:", "duplicate key 'ht'", "first at line 1")),
    "second-configfile-named": ({"a.yaml": "seed: 1\n", "b.yaml": "seed: 2\nht: cubic\n"},
                                ["--configfile", "cfg/a.yaml", "cfg/b.yaml"], ("cfg/b.yaml:2: ht:", "'cubic'")),
    "configfile-nan": ({"nan.yaml": "presets:\n  embedded:\n    digits:\n      train: {lr: .nan}\n"},
                       ["--configfile", "cfg/nan.yaml"], ("cfg/nan.yaml:4: presets/embedded/digits/train/lr", "nan")),
    "config-named": ({}, ["--config", "ht=cubic"], ("--config: ht:", "'cubic'")),
    "params-yaml-named-beside-configfile": ({"a.yaml": "seed: 1\n"}, ["--configfile", "cfg/a.yaml", "--config",
                                            "presets={'embedded': {'digits': {'nfe': [1000000000000]}}}"],
                                            ("--config: presets/embedded/digits/nfe",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CONFIGFILE_CASES))
def test_configfile_errors_name_the_file_and_line(workdir_factory, case):
    """`snakemake -n --configfile X` (and --config): a bad value is named with the file that set it
    and its line, read with ddm.config's own reader (duplicate keys, NaN, NFE beyond memory)."""
    files, args, needles = CONFIGFILE_CASES[case]
    work = workdir_factory()
    (work / "cfg").mkdir()
    for name, text in files.items():
        (work / "cfg" / name).write_text(text)
    dry = run_snakemake(work, "-n", "all", *args, timeout=180)
    assert dry.returncode != 0, dry.output[-3000:]
    assert "Traceback" not in dry.output and "Job stats" not in dry.output, dry.output[-3000:]
    for needle in needles:
        assert needle in dry.output, f"{needle!r} not in the error of `snakemake -n`:\n{dry.output[-3000:]}"


# --------------------------------------------------------------------------- image folders, output folders
def test_imagefolder_links_outside_are_named_once(work, tmp_path):
    """A link to an image outside the folder is loaded and named in one warning; a link to a file
    that is no image (/etc/passwd) is skipped with one warning, printed once."""
    from PIL import Image

    folder, outside = tmp_path / "images", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    for i in range(2):
        Image.new("RGB", (12, 12), (40 * i, 80, 120)).save(folder / f"{i}.png")
    Image.new("RGB", (12, 12), (200, 10, 10)).save(outside / "far.png")
    (folder / "far.png").symlink_to(outside / "far.png")
    (folder / "passwd.png").symlink_to("/etc/passwd")
    params = yaml.safe_load((work / "cfg" / "imagefolder.yaml").read_text())
    params["presets"]["embedded"]["imagefolder"]["source"] = str(folder)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "i.pt"
    r = run_cli(work, ["prepare", "--dataset", "imagefolder", "--params", str(tmp_path / "params.yaml"),
                       "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_torch(out, "dataset file", "ddm prepare").shape[0] == 3
    lines = r.stderr.splitlines()
    assert len([ln for ln in lines if "passwd.png" in ln]) == 1 and r.stderr.count("unreadable") == 1, r.stderr
    assert len([ln for ln in lines if "far.png" in ln]) == 1, r.stderr
    assert r.stderr.count("links to files outside it") == 1 and f"far.png -> {outside / 'far.png'}" in r.stderr, r.stderr
    assert "UserWarning" not in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_read_only_results_folder_is_named_before_any_job(workdir_factory):
    """A run whose results/ cannot be written stops before its first job with one message naming
    the folder and the fix, not Snakemake's PermissionError of a job midway."""
    work = workdir_factory()
    results = work / "results"
    results.mkdir()
    cmd = [str(BIN / "snakemake"), "--cores", "1", "all"]
    if os.geteuid() != 0:
        results.chmod(0o555)
        prefix = []
    else:
        prefix = _private_tmpfs("ro,size=64k", results)
        if prefix is None:
            pytest.skip("needs root and unshare/mount for a read-only mount, or a user other than root")
    try:
        r = subprocess.run([*prefix, *cmd], cwd=work, env=tool_env(), capture_output=True, text=True, timeout=300)
    finally:
        results.chmod(0o755)
    output = r.stdout + r.stderr
    assert r.returncode != 0, output[-3000:]
    assert "results/ is not writable" in output and "chmod -R u+w results" in output, output[-3000:]
    assert "PermissionError" not in output and "Traceback" not in output, output[-3000:]
    assert "rule prepare" not in output and not (work / "data" / "prepared").exists(), output[-3000:]
