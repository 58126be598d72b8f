"""The GPU fast path of ddm.training.TrainConfig, on the CPU: each option runs, or falls back
cleanly, or is refused with a clear message; none changes what is trained.

channels_last (runs on CPU), torch.compile (a cheap backend runs; an unknown backend and a
compiler that fails at the first step fall back to eager with a warning and give the eager
run bit for bit), tf32 and pin_memory (CUDA only: no effect on CPU), bf16 (refused on CPU:
tests/test_training.py), the params.yaml keys (schema) and resuming across these options.
"""
from __future__ import annotations

import copy

import pytest
import torch

from ddm.config import ConfigError
from ddm.validation import validate
from ddm.training import (RESUMABLE_KEYS, Trainer, TrainConfig, checkpoint_path, ema_model,
                          load_checkpoint)
from test_training import (assert_same_training_state, cfg_, make_model, one_thread,  # noqa: F401
                           run, spawn_child)


def test_channels_last_trains_the_same_model(tmp_path):
    ref = run(tmp_path / "ref", cfg_(steps=4))
    cl = run(tmp_path / "cl", cfg_(steps=4, channels_last=True))
    assert_same_training_state(ref, cl, exact=False, atol=1e-6)
    w = load_checkpoint(cl)["model"]["conv1.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last)  # the model really was NHWC
    m = ema_model(cl, make_model(seed=5))                       # loads into a plain model
    assert m.conv1.weight.is_contiguous()


def test_compile_with_a_cheap_backend_trains_the_same_model(tmp_path):
    ref = run(tmp_path / "ref", cfg_(steps=3))
    comp = run(tmp_path / "c", cfg_(steps=3, compile=True, compile_backend="eager"))
    assert_same_training_state(ref, comp, exact=False, atol=1e-6)
    assert set(load_checkpoint(comp)["model"]) == set(load_checkpoint(ref)["model"])  # no prefix


def test_unknown_compile_backend_falls_back_with_a_warning(tmp_path, caplog):
    ref = run(tmp_path / "ref", cfg_(steps=3))
    with caplog.at_level("WARNING", logger="ddm.training"):
        fb = run(tmp_path / "fb", cfg_(steps=3, compile=True, compile_backend="no-such-backend"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "ddm.training"]
    assert any("torch.compile(backend='no-such-backend') is not available" in m
               and "training without compiling" in m for m in msgs), msgs
    assert_same_training_state(ref, fb, exact=True)


@pytest.mark.slow
def test_compile_failing_at_the_first_step_falls_back_bit_exactly(tmp_path):
    """Inductor with no working C++ compiler fails at the first call, after the forward
    started: the step is undone (grads, RNG, buffers, metrics) and rerun eagerly."""
    cfg = dict(steps=4, log_every=1)
    ref = run(tmp_path / "ref", cfg_(**cfg))
    proc = spawn_child("train", {"cfg": {**cfg, "compile": True, "compile_backend": "inductor"},
                                 "out": str(tmp_path / "fb")}, CXX="/bin/false")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "failed at the first step" in out and "training continues without compiling" in out, \
        out[-4000:]
    assert_same_training_state(ref, checkpoint_path(tmp_path / "fb", 4), exact=True)
    assert (tmp_path / "ref" / "metrics.csv").read_text() == \
        (tmp_path / "fb" / "metrics.csv").read_text()


def test_cuda_only_options_on_the_cpu(tmp_path, caplog):
    ref = run(tmp_path / "ref", cfg_(steps=3, pin_memory=False))
    with caplog.at_level("WARNING", logger="ddm.training"):
        other = run(tmp_path / "tf32", cfg_(steps=3, tf32=True, pin_memory=True))
    assert any("tf32=True has no effect on device cpu" in r.getMessage() for r in caplog.records)
    assert_same_training_state(ref, other, exact=True)
    t = Trainer(make_model(), None, torch.zeros(4, 1, 8, 8), cfg_(pin_memory=True), tmp_path)
    assert t.pin is False  # page-locked memory only where there is a CUDA device


@pytest.mark.parametrize("key,value,message", [
    ("compile", "yes", "compile must be true or false"),
    ("channels_last", 1, "channels_last must be true or false"),
    ("gpus", 0, "gpus must be an integer >= 1"),
    ("nodes", 1.5, "nodes must be an integer >= 1"),
    ("compile_backend", "", "compile_backend must name a torch.compile backend"),
])
def test_bad_fast_path_values_are_one_clear_line(key, value, message):
    with pytest.raises(ValueError, match=message) as ei:
        cfg_(**{key: value})
    assert "\n" not in str(ei.value) and repr(value) in str(ei.value)


def _params(**train):
    import yaml
    from conftest import TINY_PARAMS
    p = yaml.safe_load(TINY_PARAMS.read_text())
    p["presets"]["embedded"]["digits"]["train"].update(train)
    return p


def test_params_yaml_train_keys():
    validate(_params(channels_last=True, compile=True, compile_backend="inductor",
                     pin_memory=False, precision="bf16", tf32=True, gpus=4, nodes=2))
    with pytest.raises(ConfigError, match=r"presets/embedded/digits/train/gpus"):
        validate(_params(gpus=0))
    with pytest.raises(ConfigError, match=r"presets/embedded/digits/train/compile"):
        validate(_params(compile="yes"))
    fields = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    assert {"channels_last", "compile", "compile_backend", "pin_memory", "gpus", "nodes"} <= fields


def test_resume_across_fast_path_options_and_older_checkpoints(tmp_path):
    assert {"channels_last", "compile", "pin_memory", "gpus", "nodes"} <= RESUMABLE_KEYS
    ref = run(tmp_path / "ref", cfg_(steps=6, ckpt_every=3))
    out = tmp_path / "b"
    run(out, cfg_(steps=3))
    # a checkpoint written before these options existed (its config lacks them) resumes too
    p3 = checkpoint_path(out, 3)
    ck = torch.load(p3, weights_only=True)
    old = copy.deepcopy(ck)
    for k in ("channels_last", "compile", "compile_backend", "pin_memory", "gpus", "nodes"):
        del old["config"][k]
    torch.save(old, p3)
    final = run(out, cfg_(steps=6, ckpt_every=3, channels_last=True, gpus=2))
    assert_same_training_state(ref, final, exact=False, atol=1e-6)
    assert load_checkpoint(final)["config"]["channels_last"] is True
