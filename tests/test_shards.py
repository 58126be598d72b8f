"""Sharded sample sets (ddm.shards) and the evaluate step that streams them (ddm.fidstats):
a set made of 4 shard jobs of the real Snakemake graph equals the 1-job set byte for byte, its
streamed FID equals the one-pass FID within 1e-6, and the evaluate step's peak memory does not
grow with the number of shards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from conftest import dry_run_jobs, make_workdir, run_ddm, run_snakemake, tool_env, write_params
from test_bad_inputs import run_main
from ddm.config import ConfigError
from ddm.validation import validate
from ddm.io import load_torch
from ddm.shards import shard_bounds, shard_count, shard_meta, shard_size_error

SHARDED = {"presets.embedded.digits.fid.num_samples": 1800, "presets.embedded.digits.shard_size": 500}
METRIC = "results/metrics/digits/ddm/nfe2-r0.json"


def test_shard_arithmetic():
    assert shard_count(1800, 500) == 4 and shard_count(500, 500) == 1 and shard_count(70, 500) == 1
    assert [shard_bounds(k, 1800, 500) for k in range(4)] == [(0, 500), (500, 1000), (1000, 1500), (1500, 1800)]
    with pytest.raises(ValueError, match="has shards 0..3"):
        shard_bounds(4, 1800, 500)
    assert shard_size_error(500) is None and shard_size_error(100) is None and shard_size_error(1500) is None
    assert "neither at most 500 nor a multiple of 500" in shard_size_error(700)


def test_shard_size_that_splits_a_batch_is_refused():
    from conftest import merge_params, tiny_params

    with pytest.raises(ConfigError) as e:
        validate(merge_params(tiny_params(), {"presets.embedded.digits.shard_size": 700}))
    msg = str(e.value)
    assert "\n" not in msg and "presets/embedded/digits/shard_size: 700" in msg and "use e.g. 500 or 1000" in msg


def test_every_shard_is_a_job_and_a_product(tmp_path):
    """`snakemake -n all`: one sample_shard job per shard of every set, none of `sample` for them;
    phase_sample (the DVC stage's target, a part of `all`) names every shard."""
    work = make_workdir(tmp_path, SHARDED)
    r = run_snakemake(work, "-n", "--cores", "2", "all")
    assert r.returncode == 0, r.output[-3000:]
    jobs = dry_run_jobs(r.output)
    shards = Counter((w["method"], w["nfe"], w["repeat"]) for rule, w in jobs if rule == "sample_shard")
    assert shards == {(m, "2", str(rep)): 4 for m in ("ddm", "ddpm", "sde") for rep in (0, 1)}, shards
    assert "sample" not in {rule for rule, _ in jobs}
    r = run_snakemake(work, "-n", "--cores", "2", "phase_sample")
    assert Counter(rule for rule, _ in dry_run_jobs(r.output))["sample_shard"] == 24, r.output[-3000:]


@pytest.mark.slow
def test_four_shards_equal_one_shard_through_snakemake(tmp_path):
    """The same set, first one job, then (shard_size: 500) 4 shard jobs of 500, 500, 500, 300:
    the shards, concatenated, are the one-job set byte for byte (the model is not retrained), and
    the FID streamed over the 4 shards equals the one-pass FID of the one file within 1e-6."""
    work = make_workdir(tmp_path, {"presets.embedded.digits.fid.num_samples": 1800, "conditioned": False})
    r = run_snakemake(work, "--cores", "2", METRIC, timeout=900)
    assert r.returncode == 0, r.output[-3000:]
    whole = load_torch(work / "results/samples/digits/ddm/nfe2-r0.pt", "sample set", "ddm sample")
    one = json.loads((work / METRIC).read_text())

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["presets"]["embedded"]["digits"]["shard_size"] = 500
    write_params(work, params)
    r = run_snakemake(work, "--cores", "2", METRIC, timeout=900)
    assert r.returncode == 0, r.output[-3000:]
    ran = Counter(rule for rule, _ in dry_run_jobs(r.output))
    assert ran["sample_shard"] == 4 and ran["evaluate"] == 1 and not ran["train"], ran
    files = [work / f"results/samples/digits/ddm/nfe2-r0/shard{k}.pt" for k in range(4)]
    shards = [load_torch(f, "sample shard", "ddm sample") for f in files]
    assert [len(x) for x in shards] == [500, 500, 500, 300]
    assert torch.cat(shards).numpy().tobytes() == whole.numpy().tobytes()
    streamed = json.loads((work / METRIC).read_text())
    assert streamed["num_samples"] == one["num_samples"] == 1800
    assert abs(streamed["fid"] - one["fid"]) < 1e-6, (streamed["fid"], one["fid"])


# -- peak memory of the evaluate step ---------------------------------------------------------------
#: The digits classifier's features replaced by 512 wide ones (a fixed linear map of the pixels,
#: float64: 4 KiB a sample), so that a test-sized set shows in the peak RSS of `ddm evaluate`.
_WIDE = textwrap.dedent("""
    import torch, ddm.metrics as M
    W = torch.randn(64, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    def wide(images, extractor, weights_path, **kw):
        x = torch.as_tensor(images)
        return (x.reshape(len(x), -1)[:, :64].to(torch.float64) @ W).numpy()
    M.extract_features = wide
""")
#: The peak is the child's own VmHWM, read as it exits. The wait4 ru_maxrss of a child starts from
#: its parent's RSS at fork (Linux carries the high-water mark across exec), and a pytest worker
#: late in the suite holds more than the evaluate step ever does.
_EVALUATE = _WIDE + textwrap.dedent("""
    import atexit, re, sys
    def _peak():
        status = open('/proc/self/status').read()
        open('peak_kb', 'w').write(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))
    atexit.register(_peak)
    from ddm.cli import main
    sys.exit(main(sys.argv[1:]))
""")
_REFERENCE = _WIDE + ("from ddm.digits_classifier import DIGITS_CLASSIFIER\n"
                      "from ddm.fidstats import reference_stats\n"
                      "from ddm.io import load_torch\n"
                      "reference_stats(load_torch('shard7.pt', 'shard', 'test'), DIGITS_CLASSIFIER, 'clf.pt', 'ref.npz')\n")


def _peak_rss_mb(work: Path, samples: list[str]) -> float:
    cmd = [sys.executable, "-c", _EVALUATE, "evaluate", "--samples", *samples, "--reference", "ref.npz", "--extractor",
           "extractor.json", "--dataset", "digits", "--method", "ddm", "--nfe", "2", "--repeat", "0", "--out", "m.json"]
    with open(work / "evaluate.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=work, env=tool_env(DDM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)
        code = p.wait()
    assert code == 0, (work / "evaluate.log").read_text()[-2000:]
    return int((work / "peak_kb").read_text()) / 1024


@pytest.fixture(scope="module")
def wide_set(tmp_path_factory):
    """8 shards of 10,000 digits-sized samples (40 MB of wide features each), the first 2 and all
    8 of them as one file each, and a reference of the wide features."""
    from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier
    from ddm.io import save_json, save_torch

    work = make_workdir(tmp_path_factory.mktemp("wide"))
    train_digits_classifier(work / "clf.pt", seed=0, epochs=1, min_accuracy=0.0)
    save_json({"extractor": DIGITS_CLASSIFIER, "weights": "clf.pt"}, work / "extractor.json")
    g = torch.Generator().manual_seed(0)
    shards = [torch.randint(0, 256, (10_000, 1, 8, 8), dtype=torch.uint8, generator=g) for _ in range(8)]
    for size, stem in ((20_000, "two"), (80_000, "shard")):  # each set's shards record their set (ddm.shards)
        for k, x in enumerate(shards[: size // 10_000]):
            meta = shard_meta("digits", "ddm", 2, 0, size, "0" * 64, (k * 10_000, (k + 1) * 10_000), 10_000)
            save_torch(x, work / f"{stem}{k}.pt", meta=meta)
    save_torch(torch.cat(shards[:2]), work / "whole2.pt", meta=shard_meta("digits", "ddm", 2, 0, 20_000, "0" * 64,
                                                                          (0, 20_000), None))
    save_torch(torch.cat(shards), work / "whole8.pt", meta=shard_meta("digits", "ddm", 2, 0, 80_000, "0" * 64,
                                                                      (0, 80_000), None))
    r = subprocess.run([sys.executable, "-c", _REFERENCE], cwd=work, env=tool_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return work


@pytest.mark.slow
def test_evaluate_peak_memory_does_not_grow_with_the_number_of_shards(wide_set):
    """Peak RSS of `ddm evaluate` over 2 and over 8 shards of 10,000 samples: within 20 MB,
    while the set grows by 240 MB of features. The measurement sees it: one file of the 8
    shards (the one-pass FID of all its features) peaks over 150 MB above one of 2."""
    two = _peak_rss_mb(wide_set, [f"two{k}.pt" for k in range(2)])
    eight = _peak_rss_mb(wide_set, [f"shard{k}.pt" for k in range(8)])
    whole2 = _peak_rss_mb(wide_set, ["whole2.pt"])
    whole8 = _peak_rss_mb(wide_set, ["whole8.pt"])
    assert whole8 - whole2 > 150, (whole2, whole8)
    assert eight - two < 20, (two, eight, whole2, whole8)
    assert json.loads((wide_set / "m.json").read_text())["num_samples"] == 80_000


@pytest.mark.parametrize("shard, size, said", [("0", "700", "--shard-size 700 is neither at most 500 nor a multiple"),
                                              ("4", "20", "--shard 4: a set of 70 samples in shards of 20 has shards 0..3")])
def test_sample_refuses_a_shard_before_any_work(tmp_path, shard, size, said):
    work = make_workdir(tmp_path)
    r = run_ddm(work, "sample", "--dataset", "digits", "--method", "ddm", "--model", "missing.pt", "--nfe", "2",
                "--num-samples", "70", "--shard", shard, "--shard-size", size, "--out", "x.pt")
    assert r.returncode == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- a shard knows its set: the evaluate step refuses what does not make the set -----------------------
def _sample(run: Path, out: Path, *args: str) -> None:
    r = run_main(run, ["sample", "--dataset", "digits", "--method", "ddm", "--model", "results/models/digits/ddm.pt",
                       "--nfe", "2", "--num-samples", "70", "--out", str(out), *args])
    assert r.returncode == 0, r.stderr


def _evaluate(run: Path, files: list[Path], out: Path):
    return run_main(run, ["evaluate", "--samples", *map(str, files), "--reference", "results/fid/digits/reference.npz",
                          "--extractor", "results/fid/digits/extractor.json", "--dataset", "digits", "--method", "ddm",
                          "--nfe", "2", "--repeat", "0", "--out", str(out)])


@pytest.fixture(scope="module")
def shard_files(tiny_run, tmp_path_factory):
    """Set (digits, ddm, NFE 2, repeat 0) of the tiny run, drawn again as 4 shards of 20, 20, 20, 10
    by `ddm sample` from the run's model; and shard 3 of repeat 1's set (a foreign shard)."""
    folder = tmp_path_factory.mktemp("shards")
    for k in range(4):
        _sample(tiny_run, folder / f"shard{k}.pt", "--repeat", "0", "--shard", str(k), "--shard-size", "20")
    _sample(tiny_run, folder / "foreign3.pt", "--repeat", "1", "--shard", "3", "--shard-size", "20")
    return folder


@pytest.mark.parametrize("order, said", [
    ([0, 0, 2, 3], "shard0.pt is shard 0 again (first: "),
    ([0, 1, 3], "shard3.pt (shard 3, samples 60..69) leaves a gap after the shard before it, which ends at sample 39"),
    ([0, 2, 1, 3], "shard2.pt (shard 2, samples 40..59) leaves a gap"),
    ([0, 1, 2, 2, 3], "shard2.pt is shard 2 again"),
    ([0, 1, 2], "end at sample 60 after "),
    ([0, 1, 2, "foreign3"], "foreign3.pt belongs to another set (dataset digits, method ddm, nfe 2, repeat 1)"),
])
def test_evaluate_refuses_a_set_its_shards_do_not_make(tiny_run, shard_files, tmp_path, order, said):
    """A duplicated, missing, swapped or foreign shard: one line naming the file, exit 2, no metric file."""
    files = [shard_files / f"{k if isinstance(k, str) else f'shard{k}'}.pt" for k in order]
    r = _evaluate(tiny_run, files, tmp_path / "m.json")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and said in lines[0], r.stderr
    assert not (tmp_path / "m.json").exists()


def test_evaluate_takes_the_whole_set_in_order(tiny_run, shard_files, tmp_path):
    """The 4 shards in order: the set's FID, that of the run's one-file set up to the round-off of
    drawing in batches of 20 instead of 70 (ddm.shards)."""
    r = _evaluate(tiny_run, [shard_files / f"shard{k}.pt" for k in range(4)], tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "m.json").read_text())
    one = json.loads((tiny_run / METRIC).read_text())
    assert got["num_samples"] == 70 and abs(got["fid"] - one["fid"]) < 1e-3 * one["fid"], (got["fid"], one["fid"])
