"""The products checked before Snakemake or DVC records them (workflow/rules/common.smk:
``verified_before_run`` before a run, ``record_in_dvc`` before ``dvc commit``): each product's
embedded digest verified (``ddm.io.verify_product``), and a memo of the products already verified.

The memo (``.snakemake/ddm-verified.json``) keeps, per product, the size, modification time,
change time (ctime) and inode it had when it verified. A product whose four are the same is not
read again, so a run with nothing to do does not import torch or read every model and sample set.
A same-size edit with its mtime restored (``touch -r``, ``rsync -t``, a flipped byte) still
changes the ctime, which no user tool can set back (the kernel stamps it on every write and every
``utime``), so it is verified again; so is a product that was copied or restored (a new inode).
What the checks cost on real products: benchmarks/RESULTS.md, "Product checks".

Standard library only at import (``ddm.io``: torch is imported for the first .pt file read).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ddm.io import save_text, verify_product

__all__ = ["MEMO", "first_corrupt"]

#: The memo of verified products, in the run's working folder.
MEMO = ".snakemake/ddm-verified.json"


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def first_corrupt(paths: Iterable[str | os.PathLike], memo: str | os.PathLike | None = MEMO) -> str | None:
    """The one-line refusal (``ddm.io.verify_product``) of the first existing product among ``paths``
    that does not verify, or None; a product not (yet) on disk is skipped. ``memo``: the memo file
    (None: verify every product); a memo that cannot be read or written only costs the reading."""
    known: dict = {}
    if memo is not None:
        try:
            known = json.loads(Path(memo).read_text())
        except (OSError, ValueError):
            pass
        known = known if isinstance(known, dict) else {}
    bad, seen = None, dict(known)
    for p in map(os.fspath, paths):
        if not os.path.isfile(p):
            continue
        key, stamp = os.path.realpath(p), _stamp(p)  # stamped before the read: a write during it shows
        if known.get(key) == stamp:
            continue
        bad = verify_product(p)
        if bad:
            seen.pop(key, None)
            break
        seen[key] = stamp
    if memo is not None and seen != known:
        try:
            save_text(json.dumps(seen, sort_keys=True), memo)
        except OSError:
            pass
    return bad
