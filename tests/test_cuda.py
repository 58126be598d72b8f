"""The CUDA paths, on a GPU (every test here is skipped on a machine without one; CI has none).

What only a GPU exercises: the CUDA RNG state in checkpoints (the U-Net's dropout draws on the
device) and resume, the fast path (bf16 autocast, TF32, channels_last, pinned memory,
``torch.compile`` with inductor) on the real U-Net, per-sample CUDA noise in sampling, FID
features on the GPU, and the CLI's ``--device cuda`` from data to samples.
Run on a GPU machine: ``python -m pytest -n 0 tests/test_cuda.py``.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddm.config import resolve
from ddm.validation import load_params
from ddm.experiment import build
from ddm.generate import generate
from ddm.training import TrainConfig, checkpoint_path, load_checkpoint, train
from test_training import states_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "params-tiny.yaml"


def _experiment(dropout: float = 0.0):
    cfg = resolve(load_params(TINY), "digits", "ddm")
    cfg["model"] = {**cfg["model"], "dropout": dropout}
    return build(cfg)


def _data(exp, n: int = 64) -> torch.Tensor:
    shape = (exp.cfg["channels"], exp.cfg["resolution"], exp.cfg["resolution"])
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=16, lr=1e-3, lr_min=1e-4, ema_decay=0.9, ckpt_every=3,
                keep_last=3, log_every=3, seed=1, pin_memory=False)
    return TrainConfig(**{**base, **kw})


def _train(exp, out, cfg, model=None):
    torch.manual_seed(0)
    net = model if model is not None else exp.make_model()
    return train(net, exp.objective, _data(exp), cfg, out, device="cuda", progress=False)


def test_resume_restores_the_cuda_rng_of_dropout(tmp_path):
    """Step 6 from a resume at step 3 equals the uninterrupted run's step 6: the dropout masks
    (CUDA RNG) continue where they stopped. Without the CUDA RNG state in the checkpoint the
    masks of steps 4-6 would change and the weights with them."""
    exp = _experiment(dropout=0.3)
    final = _train(exp, tmp_path, _cfg())
    ref = load_checkpoint(final)
    final.unlink()                                   # the newest gone: resume from step 3
    assert checkpoint_path(tmp_path, 3).exists()
    again = load_checkpoint(_train(exp, tmp_path, _cfg()))
    assert torch.equal(ref["rng"]["per_rank"][0]["cuda"], again["rng"]["per_rank"][0]["cuda"])
    # upsampling's backward adds with atomics on CUDA: equal up to float rounding, not bitwise
    states_equal(ref["model"], again["model"], exact=False, atol=1e-5)
    states_equal(ref["ema"], again["ema"], exact=False, atol=1e-5)


def test_dropout_masks_differ_between_steps_on_cuda(tmp_path):
    """The control for the test above: with dropout the run depends on the CUDA RNG at all."""
    exp = _experiment(dropout=0.3)
    a = load_checkpoint(_train(exp, tmp_path / "a", _cfg(steps=3)))
    torch.cuda.manual_seed(12345)                    # the trainer seeds it: no effect expected
    b = load_checkpoint(_train(exp, tmp_path / "b", _cfg(steps=3)))
    states_equal(a["model"], b["model"], exact=False, atol=1e-5)
    c = load_checkpoint(_train(exp, tmp_path / "c", _cfg(steps=3, seed=2)))
    diff = max((a["model"][k] - c["model"][k]).abs().max().item() for k in a["model"])
    assert diff > 1e-4


@pytest.mark.parametrize("opts", [dict(precision="bf16"), dict(tf32=True), dict(channels_last=True),
                                  dict(pin_memory=True),
                                  dict(precision="bf16", tf32=True, channels_last=True, pin_memory=True)],
                         ids=["bf16", "tf32", "channels_last", "pin_memory", "all-but-compile"])
def test_fast_path_options_train_close_to_fp32(tmp_path, opts):
    exp = _experiment()
    ref = load_checkpoint(_train(exp, tmp_path / "fp32", _cfg(steps=4)))
    got = load_checkpoint(_train(exp, tmp_path / "fast", _cfg(steps=4, **opts)))
    for k, v in ref["model"].items():
        w = got["model"][k].float()
        assert torch.isfinite(w).all(), k
        # 4 AdamW steps of lr <= 1e-3 move a weight by at most ~4e-3: bf16/TF32 rounding stays well inside
        assert (w - v).abs().max().item() < 2e-3, (k, opts)


def test_compile_with_inductor_trains_without_falling_back(tmp_path, caplog):
    exp = _experiment()
    ref = load_checkpoint(_train(exp, tmp_path / "eager", _cfg(steps=3)))
    with caplog.at_level(logging.WARNING):
        got = load_checkpoint(_train(exp, tmp_path / "inductor", _cfg(steps=3, compile=True)))
    assert not [r for r in caplog.records if "compile" in r.getMessage().lower()], caplog.text
    assert set(got["model"]) == set(ref["model"])
    states_equal(ref["model"], got["model"], exact=False, atol=1e-4)


def test_cuda_sampling_does_not_depend_on_batch_size():
    exp = _experiment()
    torch.manual_seed(0)
    net = exp.make_model().cuda().eval()
    seeds = list(range(100, 106))
    with torch.no_grad():
        one = generate(exp, net, 5, seeds, batch_size=6, device="cuda")
        three = generate(exp, net, 5, seeds, batch_size=2, device="cuda")
        again = generate(exp, net, 5, seeds[3:], batch_size=3, device="cuda")
    assert torch.isfinite(one).all()
    torch.testing.assert_close(one, three, rtol=0, atol=1e-5)
    torch.testing.assert_close(one[3:], again, rtol=0, atol=1e-5)


def test_fid_features_on_the_gpu_match_the_cpu(tmp_path):
    from ddm import metrics as M
    from ddm.datasets import load_dataset
    from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier

    weights = tmp_path / "digits_classifier.pt"
    train_digits_classifier(weights, seed=0)
    x = load_dataset("digits", None, "test")[:300]
    cpu = M.extract_features(x, DIGITS_CLASSIFIER, weights, cuda=False)
    gpu = M.extract_features(x, DIGITS_CLASSIFIER, weights, cuda=True)
    assert abs(gpu - cpu).max() < 1e-3 * max(1.0, abs(cpu).max())


def test_cli_prepare_train_sample_on_cuda(tmp_path):
    shutil.copy(TINY, tmp_path / "params.yaml")

    def ddm(*args):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        r = subprocess.run([sys.executable, "-m", "ddm", *args], cwd=tmp_path, capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr

    ddm("prepare", "--dataset", "digits", "--out", "digits.pt")
    ddm("train", "--dataset", "digits", "--method", "ddm", "--data", "digits.pt", "--out", "models/ddm.pt",
        "--checkpoints", "ckpt", "--device", "cuda")
    ddm("sample", "--dataset", "digits", "--method", "ddm", "--model", "models/ddm.pt", "--nfe", "5",
        "--num-samples", "16", "--out", "samples.pt", "--device", "cuda")
    assert (tmp_path / "samples.pt").stat().st_size > 0
