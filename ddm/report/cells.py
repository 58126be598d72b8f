"""How the report's tables write a measured number: a cell of ``mean`` with Table 1's marker and
``$\\pm$ std`` (``result_cell``), shared by Tables 1, 4 and 5 (``ddm.report.tables``) and the
conditioned tasks' Tables 2 and 3 (``ddm.report.task_tables``). Standard library only."""

from __future__ import annotations

import math
from typing import Mapping

__all__ = ["result_cell"]


def result_cell(res: Mapping | None, marker: str | None = None, digits: int = 2) -> str:
    """``mean`` (``digits`` decimals) with Table 1's marker and `` $\\pm$ std`` (one decimal more)."""
    if res is None:
        return "--"
    if not all(math.isfinite(v) for v in (res["mean"], res.get("std") or 0.0)):
        raise ValueError(f"a table cell of mean {res['mean']} and std {res.get('std')} is not finite")
    text = f"{res['mean']:.{digits}f}"
    if marker == "significant":
        text = r"\textbf{" + text + r"}\sigmark"
    elif marker == "not_significant":
        text = r"\textbf{" + text + r"}\nsmark"
    if res.get("std") is not None:
        text += rf" $\pm$ {res['std']:.{digits + 1}f}"
    return text
