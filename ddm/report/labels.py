"""What the report calls things, shared by its tables, figures and PDF: the methods' and datasets'
labels and :func:`latex_escape` (plain text as LaTeX). Standard library and the torch-free
``ddm.snapshot`` only, so that a figure job reads its labels without the tables' or the statistics' code.
"""

from __future__ import annotations

from typing import Mapping

from ddm.snapshot import dataset_facts

__all__ = ["METHOD_LABELS", "method_label", "DATASET_LABELS", "latex_escape"]


#: Table 1 labels of the methods this project trains, by their params.yaml names; a method's own
#: ``label:`` in params.yaml comes first (:func:`method_label`), so a renamed or new entry keeps one.
METHOD_LABELS = {"ddm": "DDM (ours)", "ddpm": "DDPM (VP-SDE, EM)", "sde": "SDE (VE-SDE, EM)",
                 "ddpm_x0": "DDPM + $x_0$ branch"}


def method_label(method: str, metrics: Mapping | None = None, *, latex: bool = True) -> str:
    """A Table 1 method's row label: its ``label:`` in params.yaml (``method_labels`` of
    reports/metrics.json), else :data:`METHOD_LABELS`, else its name (LaTeX-escaped if ``latex``)."""
    own = (metrics or {}).get("method_labels", {}).get(method)
    return own or METHOD_LABELS.get(method) or (latex_escape(method) if latex else method)


#: Each dataset's label in the report (``ddm.datasets.DatasetSpec.label``, live: a plug-in's dataset has its own).
DATASET_LABELS = dataset_facts("label")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Plain text (a method name, a CSV field) as LaTeX that typesets the same characters."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
