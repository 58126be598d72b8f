"""The values behind every mean ± std over training seeds (Tables 1, 4 and 5, ``replicates: K``): one
row per trained network, so a reader sees which network moves a mean, not only how far the std
says they spread (ddm.replicates: network k is trained with seed ``seed + k`` and scored on its
own sample set, repeat k)."""

from __future__ import annotations

from typing import Mapping

from ddm.report.labels import method_label

__all__ = ["seed_table"]

SEEDS = "training seeds"


def seed_table(metrics: Mapping, d: Mapping, digits: int = 2) -> dict | None:
    """``{"nfes", "rows": [{"label", "cells"}]}`` of one dataset's cells over training seeds (Table 1's
    methods, then Table 4's and Table 5's rows), one row per network k; None when no cell has training
    seeds. A row that samples another row's network (``shared_networks``: Table 4's h_t = c is
    Table 1's DDM) is not repeated: its networks are that row's."""
    res = d["results"]
    rows = metrics.get("ablation_rows") or {}
    ablations = [r["method"] for t in ("table4", "table5") for r in rows.get(t, [])]
    shared = metrics.get("shared_networks", {})
    methods = [m for m in dict.fromkeys([*metrics["table1_methods"], *ablations]) if m in res and m not in shared]
    seeded = {m: {int(n): c["values"] for n, c in res[m].items() if c.get("unit") == SEEDS} for m in methods}
    seeded = {m: by for m, by in seeded.items() if by}
    if not seeded:
        return None
    nfes = sorted({n for by in seeded.values() for n in by})
    rows = []
    for m, by in seeded.items():
        for k in range(max(len(v) for v in by.values())):
            cells = [f"{by[n][k]:.{digits}f}" if n in by and k < len(by[n]) else "--" for n in nfes]
            rows.append({"label": f"{method_label(m, metrics)}, network {k}", "cells": cells})
    return {"nfes": nfes, "rows": rows}
