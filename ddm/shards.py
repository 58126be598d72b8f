"""Sharded sample sets: a set of N samples made by ceil(N / S) jobs of at most S samples each.

A sample set draws one seed per sample (``ddm.modelfile.sample_seeds``, ``ddm.sampling.SampleRNG``),
so shard k of a set is samples [k*S, min((k+1)*S, N)) of the same seeds; concatenated in order,
the shards are the set. ``ddm sample`` draws in batches of :data:`SAMPLE_BATCH` counted from the
first sample it draws. A shard size that is a multiple of the batch makes each shard draw exactly
the batches the one-job set draws, so the merged set equals it bit for bit (tests/test_shards.py).
A shard size S below the batch makes each shard one batch of S: the merged set equals the one-job
set drawn with ``--batch-size S``; against batches of 500 the samples differ by float round-off
only (a sample's noise does not depend on its batch: tests/test_sampling.py). Other sizes are
refused (:func:`shard_size_error`).

``shard_size`` is a key of each dataset block of a preset (params.yaml); absent, a set is one
shard. Snakemake makes one job per shard (workflow/rules/sample.smk: ``sample_shard``), and
``ddm evaluate`` reads the shards one at a time (``ddm.fidstats``). Standard library only: the
workflow imports it.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["SAMPLE_BATCH", "shard_size_error", "set_shard_size", "shard_count", "shard_bounds"]

#: Samples per batch of ``ddm sample`` (its --batch-size default): a set's batches start at
#: multiples of it, counted from the set's first sample.
SAMPLE_BATCH = 500


def shard_size_error(size: int, batch: int = SAMPLE_BATCH) -> str | None:
    """Why ``size`` cannot cut sets into shards of whole batches of ``batch``; None if it can."""
    if size < 1:
        return f"{size} is not a positive number of samples"
    if size > batch and size % batch:
        return (f"{size} is neither at most {batch} nor a multiple of {batch} (the sampling batch): shards hold "
                f"whole batches; use e.g. {size // batch * batch or batch} or {(size // batch + 1) * batch}")
    return None


def set_shard_size(block: Mapping, num_samples: int) -> int:
    """The shard size of a set of ``num_samples`` in a preset's dataset ``block`` (its
    ``shard_size``; the whole set when absent or larger)."""
    size = block.get("shard_size")
    return num_samples if size is None else min(int(size), num_samples)


def shard_count(num_samples: int, size: int) -> int:
    """Shards of at most ``size`` samples that make a set of ``num_samples``: ceil(N / S)."""
    if num_samples < 1 or size < 1:
        raise ValueError(f"a set of {num_samples} samples in shards of {size}: both must be >= 1")
    return -(-num_samples // size)


def shard_bounds(shard: int, num_samples: int, size: int) -> tuple[int, int]:
    """[start, stop) of shard ``shard`` in the set's samples (and seeds)."""
    count = shard_count(num_samples, size)
    if not 0 <= shard < count:
        raise ValueError(f"shard {shard}: a set of {num_samples} samples in shards of {size} has shards "
                         f"0..{count - 1}; pick one of them")
    return shard * size, min((shard + 1) * size, num_samples)
