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
``ddm evaluate`` reads the shards one at a time (``ddm.fidstats``).

A shard knows its set: ``ddm sample`` stores :func:`shard_meta` beside the images (``meta`` of
``ddm.io.save_torch``, under the file's checksum): the set's identity (dataset, method, NFE,
repeat, size, the sha256 of the model file that drew it), the shard's index, the shard size and
its sample range [start, stop). ``ddm evaluate`` checks the files it is given with a
:class:`SetCheck` as it streams them: a file of another set, a shard given twice, out of order,
overlapping or leaving a gap, a count that is not its range's, and a set that ends short are
each refused in one line naming the file (a duplicated shard would otherwise weigh twice in the
FID). Standard library only: the workflow imports it.
"""

from __future__ import annotations

from typing import Mapping

from ddm.io import REBUILD, InputError

__all__ = ["SAMPLE_BATCH", "shard_size_error", "set_shard_size", "shard_count", "shard_bounds", "SET_KEYS",
           "shard_meta", "SetCheck"]

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


#: The fields that name a sample set (``ddm evaluate``'s options) in a shard's ``set``.
SET_KEYS = ("dataset", "method", "nfe", "repeat")


def shard_meta(dataset: str, method: str, nfe: int, repeat: int, num_samples: int, model_sha256: str,
               bounds: tuple[int, int], shard_size: int | None) -> dict:
    """What a sample file of ``ddm sample`` records about where it belongs: its set (the set's
    keys, its size and the model file it was drawn from) and its place (index, size, range)."""
    size = shard_size or num_samples
    start, stop = bounds
    return {"set": {"dataset": dataset, "method": method, "nfe": int(nfe), "repeat": int(repeat),
                    "num_samples": int(num_samples), "model_sha256": model_sha256},
            "shard": start // size, "shard_size": int(size), "start": int(start), "stop": int(stop)}


class SetCheck:
    """The files of one sample set as ``ddm evaluate`` reads them, checked one by one (:meth:`add`,
    in the order given) and at the end (:meth:`finish`): each names the set ``expect`` (the
    :data:`SET_KEYS` of the evaluate job) and the set of the first file, and the shards follow each
    other from sample 0 to the set's size, each holding its range's count of images."""

    def __init__(self, expect: Mapping):
        self.expect = {k: expect[k] for k in SET_KEYS}
        self.first: tuple[str, dict] | None = None
        self.seen: dict[int, str] = {}
        self.stop = 0

    def add(self, path, meta, count: int) -> None:
        """Check the file ``path`` (its ``meta`` of :func:`shard_meta` and its ``count`` of images)."""
        if not isinstance(meta, dict) or not isinstance(meta.get("set"), dict):
            raise InputError(f"sample file {path} records no sample set (an older ddm wrote it, or not `ddm sample`): "
                             f"{REBUILD}")
        own = {k: meta["set"].get(k) for k in SET_KEYS}
        if own != self.expect:
            raise InputError(f"sample file {path} belongs to another set ({_set(own)}), not to {_set(self.expect)}: "
                             f"give this set's files only")
        if self.first is None:
            self.first = (str(path), meta)
        elif meta["set"] != self.first[1]["set"] or meta["shard_size"] != self.first[1]["shard_size"]:
            raise InputError(f"sample file {path} was drawn for another run of {_set(own)} than {self.first[0]} "
                             f"(another model file, set size or shard size): {REBUILD}")
        k, start, stop = meta["shard"], meta["start"], meta["stop"]
        if k in self.seen:
            raise InputError(f"sample file {path} is shard {k} again (first: {self.seen[k]}): give each shard once")
        if start != self.stop:
            what = "overlaps the shard before it" if start < self.stop else "leaves a gap after the shard before it"
            raise InputError(f"sample file {path} (shard {k}, samples {start}..{stop - 1}) {what}, which ends at "
                             f"sample {self.stop - 1}: give the set's shards once each, in order from shard 0")
        if count != stop - start:
            raise InputError(f"sample file {path} holds {count} images; its shard {k} is samples {start}..{stop - 1} "
                             f"({stop - start}): {REBUILD}")
        self.seen[k], self.stop = str(path), stop

    def finish(self) -> None:
        """After the last file: the shards covered the whole set."""
        size = self.first[1]["set"]["num_samples"] if self.first else 0
        if self.stop != size:
            last = list(self.seen.values())[-1] if self.seen else "(none)"
            raise InputError(f"sample files end at sample {self.stop} after {last}; the set has {size} "
                             f"(shards missing): give all {shard_count(size, self.first[1]['shard_size'])} shards")


def _set(keys: Mapping) -> str:
    return ", ".join(f"{k} {keys[k]}" for k in SET_KEYS)
