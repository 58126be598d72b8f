"""Finished sample sets kept beside a job, so that a stopped ``ddm sample-task`` resumes set by set.

A conditioned task samples every (NFE, repeat) set of Tables 2 and 3 in one job (hours on a GPU
at the paper's sizes). Snakemake deletes a failed job's outputs, so a job stopped by its time
limit or a preemption would start again from nothing. Each set is therefore also written, as it
finishes, into a folder of its own under ``results/checkpoints`` (the rule's ``--resume-dir``; a
hard link to the output where the file system allows, so no second copy on disk),
named by a key of everything its samples depend on: the model file, the test split, the
autoencoder and the sampling config. A rerun with the same key reads the sets found there and
samples only the others; a different key (a new model, another sampler) finds nothing, and the
folders of other keys are removed. A set's samples do not depend on the job that made it (each
sample has its own seed, ``ddm.modelfile.sample_seeds``), so a resumed job's files equal an
uninterrupted job's byte for byte.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ddm.digests import json_digest
from ddm.io import InputError, file_checksum, load_torch

__all__ = ["SetStore", "set_key", "write_sets"]

log = logging.getLogger("ddm")


def set_key(files: Iterable[str | Path | None], config) -> str:
    """A short key of what a sample set depends on: the contents of ``files`` (None: absent) and a
    JSON-able ``config``."""
    sums = [None if f is None else file_checksum(f) for f in files]
    return json_digest({"files": sums, "config": config})[:16]


class SetStore:
    """The finished sets of one (task, method) under ``root / key``; other keys' folders go."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.root, self.dir = Path(root), Path(root) / key
        if self.root.is_dir():
            for old in self.root.iterdir():
                if old.is_dir() and old.name != key:
                    log.info("sample sets of another model or sampling config: removing %s", old)
                    shutil.rmtree(old)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, nfe: int, repeat: int) -> Path:
        return self.dir / f"nfe{nfe}-r{repeat}.pt"

    def load(self, nfe: int, repeat: int):
        """The kept samples of set (nfe, repeat), or None when absent or unreadable (sampled again)."""
        path = self.path(nfe, repeat)
        if not path.exists():
            return None
        try:
            return load_torch(path, f"kept sample set NFE {nfe}, repeat {repeat}", "ddm sample-task")
        except InputError as e:
            log.warning("%s; sampling it again", e)
            return None

    def keep(self, written: str | Path, nfe: int, repeat: int) -> None:
        """Keep the file of set (nfe, repeat) that the job wrote: a hard link where the file system
        allows it (no second copy on disk), else a copy; either way whole or absent (a rename)."""
        target = self.path(nfe, repeat)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(written, tmp)
        except OSError:
            shutil.copyfile(written, tmp)
        os.replace(tmp, target)


def write_sets(sets: Iterable[tuple[int, int]], store: SetStore | None,
               sample: Callable[[list], Iterator[tuple[tuple[int, int], object]]],
               write: Callable[[tuple[int, int], object], Path]) -> None:
    """Write every set of ``sets`` with ``write(set, samples)`` (which returns the file it wrote):
    first those ``store`` keeps (read one at a time), then ``sample(the others)``'s as they finish,
    each kept in ``store`` once written. Without a store, ``sample(sets)``'s as they come."""
    if store is None:
        for s, x in sample(list(sets)):
            write(s, x)
        return
    todo = []
    for s in sets:
        x = store.load(*s)
        if x is None:
            todo.append(s)
        else:
            log.info("sample set NFE %d, repeat %d: kept by an earlier run of this job (%s)", *s, store.dir)
            write(s, x)
    for s, x in sample(todo):
        store.keep(write(s, x), *s)
