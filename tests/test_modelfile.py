"""Model files (``ddm.modelfile``): what ``ddm train`` writes is what ``ddm sample`` loads, any
other file is a one-line InputError; the seeds of FID repeats are disjoint blocks."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_params
from ddm.config import resolve
from ddm.experiment import build, load_model
from ddm.generate import generate
from ddm.io import InputError, save_torch
from ddm.modelfile import FORMAT, SEED_BLOCK, read_model, sample_seeds, save_model


def test_saved_model_loads_as_the_same_experiment_and_network(tmp_path):
    cfg = resolve(tiny_params(), "digits", "ddm")
    exp = build(cfg)
    torch.manual_seed(0)
    net = exp.make_model().eval()
    path = save_model(tmp_path / "m.pt", exp, net, checkpoint="ckpt/step-6.pt", snapshots=[{"step": 6, "ema": {}}])
    blob = read_model(path)
    assert blob["format"] == FORMAT and blob["checkpoint"] == "ckpt/step-6.pt" and blob["snapshots"][0]["step"] == 6
    exp2, net2 = load_model(path)
    assert exp2.cfg == exp.cfg and exp2.model_kwargs == exp.model_kwargs and not net2.training
    assert torch.equal(generate(exp2, net2, 2, [1, 2]), generate(exp, net, 2, [1, 2]))
    assert "snapshots" not in read_model(save_model(tmp_path / "n.pt", exp, net))


def test_other_files_are_one_line_input_errors(tmp_path):
    save_torch({"format": "other"}, tmp_path / "other.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for name, needle in [("nope.pt", "does not exist"), ("empty.pt", "is empty"),
                         ("junk.pt", "cannot be read"), ("other.pt", f"not a model written by `ddm train` (format {FORMAT})")]:
        with pytest.raises(InputError, match=f"model file .*{name}") as e:
            load_model(tmp_path / name)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_seed_blocks_of_repeats_are_disjoint():
    assert sample_seeds(0, 3) == [SEED_BLOCK, SEED_BLOCK + 1, SEED_BLOCK + 2]
    assert sample_seeds(2, 1) == [3 * SEED_BLOCK]
    with pytest.raises(ValueError, match="num_samples must lie in"):
        sample_seeds(0, SEED_BLOCK + 1)
    import ddm.cli

    assert ddm.cli.sample_seeds is sample_seeds  # the CLI's name
