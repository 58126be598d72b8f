"""reports/report.pdf: reports/report.tex.j2 rendered with the provenance, claims.tex, tables.tex and
the figure pages, compiled with latexmk or pdflatex (``build_report_pdf``); without LaTeX a
one-page placeholder that says what to install.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

from ddm.report.figures import load_pyplot
from ddm.report.labels import DATASET_LABELS, METHOD_LABELS, latex_escape
from ddm.report.provenance import provenance_text
from ddm.report.tables import template_env
from ddm.report.task_tables import TASK_COLUMNS
from ddm.replicates import split_replicate

__all__ = ["ReportError", "LATEX_PACKAGES", "find_latex", "no_latex_message", "report_pages", "render_report",
           "build_report_pdf"]


#: Debian packages that give pdflatex and what reports/report.tex.j2 uses.
LATEX_PACKAGES = "texlive-latex-base texlive-latex-recommended texlive-fonts-recommended"
_FIGURE = re.compile(r"^(?:fid_vs_nfe_(?P<fid>[a-z0-9]+)|fig3_(?P<fig3>[a-z0-9]+)|convergence_(?P<conv>[a-z0-9]+)"
                     r"|samples_(?P<ds>[a-z0-9]+)_(?P<method>[a-z][a-z0-9_]*(?:-s[1-9][0-9]*)?)_nfe(?P<nfe>\d+)"
                     r"|tasks_(?P<task>[a-z_]+))\.png$")


class ReportError(RuntimeError):
    """The PDF report could not be built (one line: what, and how to fix it)."""


def find_latex() -> str | None:
    """latexmk, else pdflatex, on PATH (None: the report is a placeholder page)."""
    return shutil.which("latexmk") or shutil.which("pdflatex")


def no_latex_message(out: str | Path) -> str:
    return (f"{out}: no pdflatex on PATH, so the report is a one-page placeholder; to build it install "
            f"LaTeX (Debian: apt-get install {LATEX_PACKAGES}) and rerun `snakemake all`")


def _network_label(model: str) -> str:
    """A grid's network: its method's label, and ``network k`` for training-seed replicate k (ddm.replicates)."""
    method, k = split_replicate(model)
    return METHOD_LABELS.get(method, latex_escape(method)) + (f", network {k}" if k else "")


def report_pages(figures: Iterable[str | Path]) -> list[dict]:
    """The report's figure pages, from the figure files the pipeline made: per dataset, FID
    against NFE, FID against training step, one page of sample grids per method (NFEs left to
    right) and Fig. 3; one page per conditioned task; then any other figure, captioned with its
    file name."""
    fid, fig3, conv, grids, other, tasks = {}, {}, {}, defaultdict(dict), [], {}
    for f in map(Path, figures):
        if f.suffix.lower() not in (".png", ".pdf", ".jpg", ".jpeg"):
            raise ReportError(f"{f}: not a figure pdflatex can include (PNG, PDF or JPEG)")
        m = _FIGURE.match(f.name)
        if not m or (m["task"] and m["task"] not in TASK_COLUMNS):
            other.append(f.name)
        elif m["task"]:
            tasks[m["task"]] = f.name
        elif m["fid"] or m["fig3"] or m["conv"]:
            (fid if m["fid"] else fig3 if m["fig3"] else conv)[m["fid"] or m["fig3"] or m["conv"]] = f.name
        else:
            grids[(m["ds"], m["method"])][int(m["nfe"])] = f.name
    pages = []
    for ds in sorted(set(fid) | set(fig3) | set(conv) | {d for d, _ in grids}):
        name = DATASET_LABELS.get(ds, latex_escape(ds))
        if ds in fid:
            pages.append({"files": [fid[ds]], "caption": f"FID against NFE on {name}: mean over the repeated "
                          "sample sets, error bars one standard deviation (the numbers of the tables)."})
        if ds in conv:
            pages.append({"files": [conv[ds]], "caption": f"FID against training step on {name}."})
        for (d, m), by_nfe in sorted(grids.items()):
            if d == ds:
                nfes = sorted(by_nfe)
                pages.append({"files": [by_nfe[n] for n in nfes], "caption": (
                    f"Samples of {_network_label(m)} on {name} at NFE "
                    f"{', '.join(map(str, nfes))} (left to right): the first 64 samples of sample set 0.")})
        if ds in fig3:
            pages.append({"files": [fig3[ds]], "caption": f"Fig.~3 (left) on {name}: MSE between the predicted "
                          r"$x_0$ at each reverse step and the final sample, per model."})
    pages += [{"files": [tasks[t]], "caption": f"Conditioned generation (Tables 2 and 3), {TASK_COLUMNS[t]['title'].lower()} "
               "on its embedded stand-in task: one row per test example; left to right the condition, the samples of "
               "each method at each NFE of Table 2 (sample set 0) and the target."} for t in TASK_COLUMNS if t in tasks]
    pages += [{"files": [f], "caption": latex_escape(f"reports/figures/{f}")} for f in sorted(other)]
    return pages


def render_report(template: Path, metrics: Mapping, pages: list[dict], claims: bool = False) -> str:
    """reports/report.tex from its template (reports/report.tex.j2): a title page with the
    provenance (and claims.tex, the verdicts of ddm.claims, with ``claims``), then tables.tex (one
    page per table) and the figure pages."""
    env = template_env()
    env.loader = __import__("jinja2").FileSystemLoader(str(Path(template).parent))
    prov = metrics.get("provenance")
    text = provenance_text(prov)
    return env.get_template(Path(template).name).render(
        preset=latex_escape(metrics["preset"]), ht=latex_escape(metrics["ht"]), pages=pages,
        provenance=text["caption"] if text else "Provenance: not recorded (reports/metrics.json has none).", claims=claims,
        date=(prov or {}).get("computed_last") or "date unknown", run=(metrics.get("run") or {}).get("name", "quick"),
        datasets=[DATASET_LABELS.get(d, latex_escape(d)) for d in sorted(metrics["datasets"])])


def _source_epoch(metrics: Mapping) -> int:
    """SOURCE_DATE_EPOCH for pdflatex: the time the numbers were computed, so the PDF's dates
    (and bytes) depend on the inputs only, not on when it was built."""
    from datetime import datetime, timezone

    stamp = (metrics.get("provenance") or {}).get("computed_last")
    if not stamp:
        return 0
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def _run_latex(latex: str, build: Path, epoch: int) -> Path:
    """Compile build/report.tex with latexmk or pdflatex (reruns until references settle)."""
    import os
    import subprocess

    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "FORCE_SOURCE_DATE": "1"}
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    cmd = [latex, "-pdf", *flags, "report.tex"] if Path(latex).name.startswith("latexmk") else [latex, *flags, "report.tex"]
    for _ in range(1 if cmd[1] == "-pdf" else 3):
        r = subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True, errors="replace", timeout=600)
        log_text = (build / "report.log").read_text(errors="replace") if (build / "report.log").exists() else r.stdout
        if r.returncode != 0 or not (build / "report.pdf").exists():
            sys.stderr.write(log_text)
            errors = [ln for ln in log_text.splitlines() if ln.startswith("!") or ": error" in ln.lower()
                      or re.match(r"^\./.*:\d+: ", ln)]
            raise ReportError(f"{Path(latex).name} failed on report.tex: {errors[0] if errors else 'exit ' + str(r.returncode)}"
                              " (its log is above)")
        if "Rerun to get" not in log_text and "Label(s) may have changed" not in log_text:
            break
    return build / "report.pdf"


def _placeholder_pdf(out: Path, message: str) -> Path:
    """A one-page PDF that says why the report was not built (matplotlib; no LaTeX needed)."""
    import textwrap

    plt = load_pyplot()
    fig = plt.figure(figsize=(8.27, 11.69))
    fig.text(0.08, 0.92, "reports/report.pdf was not built", fontsize=16, va="top")
    fig.text(0.08, 0.86, textwrap.fill(message, 90), fontsize=9, va="top", family="monospace")
    from ddm.io import atomic_write

    atomic_write(out, lambda f: fig.savefig(f, format="pdf", metadata={"CreationDate": None}))
    plt.close(fig)
    return out


def build_report_pdf(template: Path, tables: Path, metrics_json: Path, figures: Iterable[str | Path],
                     out: Path, latex: str | None, claims: Path | None = None) -> Path:
    """reports/report.pdf: reports/report.tex.j2 rendered with the figure pages (and ``claims``,
    reports/claims.tex, on the first page), compiled with
    ``latex`` (latexmk or pdflatex) in a temporary folder and written atomically; without LaTeX
    (``latex`` None) a one-page placeholder that says what to install."""
    import tempfile

    from ddm.io import atomic_write

    figures = [Path(f) for f in figures]
    with open(metrics_json) as f:
        metrics = json.load(f)
    pages = report_pages(figures)
    if not latex:
        return _placeholder_pdf(Path(out), no_latex_message(out))
    if not Path(latex).is_file():
        raise ReportError(f"LaTeX program {latex} does not exist: install LaTeX (Debian: apt-get install "
                          f"{LATEX_PACKAGES}) or rerun Snakemake so it looks up pdflatex on PATH again")
    with tempfile.TemporaryDirectory(prefix="ddm-report-") as tmp:
        build = Path(tmp)
        shutil.copyfile(tables, build / "tables.tex")
        if claims:
            shutil.copyfile(claims, build / "claims.tex")
        (build / "figures").mkdir()
        for f in figures:
            shutil.copyfile(f, build / "figures" / f.name)
        (build / "report.tex").write_text(render_report(Path(template), metrics, pages, claims=bool(claims)))
        pdf = _run_latex(latex, build, _source_epoch(metrics)).read_bytes()
    return atomic_write(out, lambda f: f.write(pdf))
