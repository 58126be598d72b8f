"""A stopped sample-task job resumes set by set (ddm.setstore): the sets it finished are read back,
only the others are sampled, and the files equal those of an uninterrupted job byte for byte."""

from __future__ import annotations

import os

import pytest
import torch

from ddm.io import load_torch, save_torch
from ddm.setstore import SetStore, set_key, write_sets

SETS = [(5, 0), (5, 1), (10, 0)]


class Stop(Exception):
    """The job's time limit, in the middle of a set."""


def sampler(calls: list, stop_after: int | None = None):
    """Sets of seeded noise, one per (nfe, repeat); raises Stop before set number ``stop_after``."""
    def sample(todo):
        for i, (nfe, repeat) in enumerate(todo):
            if stop_after is not None and i == stop_after:
                raise Stop
            calls.append((nfe, repeat))
            yield (nfe, repeat), torch.randn(4, 3, generator=torch.Generator().manual_seed(nfe * 100 + repeat))
    return sample


def writer(folder):
    folder.mkdir(parents=True, exist_ok=True)

    def write(s, x):
        return save_torch(x, folder / f"nfe{s[0]}-r{s[1]}.pt")
    return write


def test_a_stopped_job_samples_only_what_it_had_not_finished(tmp_path):
    whole = []
    write_sets(SETS, None, sampler(whole), writer(tmp_path / "whole"))
    assert whole == SETS

    key, first, second = "k" * 16, [], []
    with pytest.raises(Stop):
        write_sets(SETS, SetStore(tmp_path / "keep", key), sampler(first, stop_after=2), writer(tmp_path / "a"))
    assert first == SETS[:2]
    kept = SetStore(tmp_path / "keep", key)
    assert sorted(p.name for p in kept.dir.iterdir()) == ["nfe5-r0.pt", "nfe5-r1.pt"]
    assert os.stat(kept.path(5, 0)).st_ino == os.stat(tmp_path / "a" / "nfe5-r0.pt").st_ino  # a link, not a copy
    write_sets(SETS, kept, sampler(second), writer(tmp_path / "b"))  # Snakemake removed the failed job's outputs
    assert second == SETS[2:]
    for n, r in SETS:
        name = f"nfe{n}-r{r}.pt"
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_another_key_or_an_unreadable_set_is_sampled_again(tmp_path):
    store = SetStore(tmp_path / "keep", "a" * 16)
    write_sets(SETS, store, sampler([]), writer(tmp_path / "a"))
    store.path(5, 1).write_bytes(b"truncated")
    again = []
    write_sets(SETS, SetStore(tmp_path / "keep", "a" * 16), sampler(again), writer(tmp_path / "b"))
    assert again == [(5, 1)]
    fresh = []
    write_sets(SETS, SetStore(tmp_path / "keep", "b" * 16), sampler(fresh), writer(tmp_path / "c"))
    assert fresh == SETS and [p.name for p in (tmp_path / "keep").iterdir()] == ["b" * 16]
    assert load_torch(tmp_path / "c" / "nfe10-r0.pt", "set", "test").shape == (4, 3)


def test_the_key_follows_every_file_and_the_sampler(tmp_path):
    model, data = tmp_path / "model.pt", tmp_path / "test.pt"
    model.write_bytes(b"weights")
    data.write_bytes(b"conditions")
    key = set_key([model, data, None], {"nfe_sampler": "alg2"})
    assert key == set_key([model, data, None], {"nfe_sampler": "alg2"}) and len(key) == 16
    assert key != set_key([model, data, None], {"nfe_sampler": "ddim"})
    assert key != set_key([model, data, data], {"nfe_sampler": "alg2"})
    model.write_bytes(b"weightz")
    assert key != set_key([model, data, None], {"nfe_sampler": "alg2"})
