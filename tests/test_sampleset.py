"""The rules of a sample set request live in the library (ddm.sampleset), where a notebook user
meets them as ``ddm sample`` does: the set fits in memory, a shard names a size of whole batches
and an index the set has, the sampler ceiling has its training images; and a shard is the same
pixels as that slice of the whole set."""

from __future__ import annotations

import pytest
import torch

from conftest import merge_params, run_ddm, tiny_params
from ddm.config import resolve
from ddm.experiment import build
from ddm.sampleset import SampleSetError, sample_set, set_bounds


@pytest.fixture(scope="module")
def ddm_exp():
    exp = build(resolve(tiny_params(), "digits", "ddm"))
    torch.manual_seed(0)
    return exp, exp.make_model().eval()


def test_a_request_is_checked_by_the_library(ddm_exp, monkeypatch):
    cfg = ddm_exp[0].cfg
    assert set_bounds(cfg, 70) == (0, 70)
    assert set_bounds(cfg, 70, shard=3, shard_size=20, batch_size=20) == (60, 70)
    cases = [({"shard": 1}, "shard", "1 needs a shard size"),
             ({"shard": 0, "shard_size": 30, "batch_size": 20}, "shard_size", "30 is neither at most 20 nor a multiple"),
             ({"shard": 4, "shard_size": 20, "batch_size": 20}, "shard", "4: a set of 70 samples in shards of 20 has "
                                                                        "shards 0..3")]
    for request, option, said in cases:
        with pytest.raises(SampleSetError) as e:
            set_bounds(cfg, 70, **request)
        assert e.value.option == option and e.value.message.startswith(said) and str(e.value) == f"{option} {e.value.message}"
    monkeypatch.setenv("DDM_MEMORY", "1M")
    with pytest.raises(SampleSetError, match=r"num_samples 100000: .*1x8x8.*DDM_MEMORY=1M"):
        sample_set(*ddm_exp, 2, 0, 100_000)  # before any sampling


CEILING = {"solver_methods.ddm_ceiling": {"model": "ddm", "sampler": "ddm", "grid": "uniform",
                                          "denoiser": "posterior_mean"}}


def test_the_ceiling_needs_its_training_images(workdir_factory):
    """The library's rule, and `ddm sample` saying it in its own option's name before the model loads."""
    cfg = resolve(merge_params(tiny_params(), CEILING), "digits", "ddm_ceiling")
    with pytest.raises(SampleSetError, match="training_images not given: the sampler ceiling .* data/prepared/digits.pt"):
        sample_set(build(cfg), None, 2, 0, 4)
    assert set_bounds(cfg, 4, training_images="data/prepared/digits.pt") == (0, 4)
    r = run_ddm(workdir_factory(CEILING), "sample", "--dataset", "digits", "--method", "ddm_ceiling", "--model",
                "missing.pt", "--nfe", "2", "--num-samples", "4", "--out", "x.pt")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "ddm sample: --data not given: the sampler ceiling (sampling: denoiser: posterior_mean) draws from its "
        "training images: pass ddm prepare's data/prepared/digits.pt"], r.stderr


def test_a_shard_is_that_slice_of_the_whole_set(ddm_exp):
    whole = sample_set(*ddm_exp, 2, 1, 6, batch_size=2)
    assert torch.equal(sample_set(*ddm_exp, 2, 1, 6, shard=1, shard_size=2, batch_size=2), whole[2:4])
