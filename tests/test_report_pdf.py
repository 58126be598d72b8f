"""reports/report.pdf, Snakemake's own report, DVC's views and the provenance of every table, on
the tiny config with every switch on (ablations, long_nfe, solver_study, conditioned), in a real git
repository, with real Snakemake, pdflatex and DVC.

Names LaTeX must see escaped: published rows (ddm/data/published.csv) with `&`, `%`, `_` and `#`
(a Table 1 method key with `_` is a unit test: tests/test_report.py; here the ablation and solver
methods carry `_` through the pipeline's paths).
The run (module fixture) continues the session's shared tiny run (conftest ``tiny_run``) in a copy:
only what the switches add is computed. The other tests work on copies of it or read it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import (BIN, CORES, copy_run, dvc_env, merge_params, run_ddm, run_snakemake, tiny_params, tool_env,
                      write_params)
from ddm.validation import load_params
from ddm.report.pdf import LATEX_PACKAGES
from ddm.report.provenance import package_versions, params_hash

pytestmark = pytest.mark.slow

LATEX = shutil.which("latexmk") or shutil.which("pdflatex")
needs_latex = pytest.mark.skipif(LATEX is None, reason=f"no pdflatex (apt-get install {LATEX_PACKAGES})")
needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="no pdftotext (apt-get install poppler-utils)")

#: Published rows for the digits table (NFE 2 and the long NFE 4 of the tiny config): LaTeX specials in the
#: method and params columns.
ODD_REPORTED = "Yun & Lin 100% net_v2 #1"
PUBLISHED_ROWS = [f'1,digits,{ODD_REPORTED},1M & 5%,{n},{v},"a test row"' for n, v in ((2, 12.34), (4, 5.67))]
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}
RUN_TIMEOUT = 3600


#: The ablation and solver methods this test keeps (every table and figure still has rows; the
#: full lists cost 4 times the jobs on 2 cores): Table 4, Table 5, Fig. 3, the fair-solver table.
#: h_t = c is Table 1's DDM (ht: constant) trained once (ddm.config.training_twins): its row costs
#: sample sets only, and test_the_twin_rows_come_from_one_training reads it.
KEEP = {"ablation_methods": ("ht_constant", "ht_linear", "w_unit", "ddpm_x0"), "solver_methods": ("ddm_2m",)}


def everything_on() -> dict:
    """The tiny params with every switch on and fewer ablation/solver methods."""
    params = tiny_params()
    on = merge_params(params, {k: True for k, v in params.items() if isinstance(v, bool)})
    for table, keep in KEEP.items():
        on[table] = {m: on[table][m] for m in keep}
    return on


def git(work: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=work, env=tool_env(**GIT_ENV), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r.stdout.strip()


def sh(work: Path, *cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=work, env=tool_env(**(env or {})), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def full_run(tiny_run, tmp_path_factory) -> SimpleNamespace:
    """`snakemake all` with every switch on, built on a copy of the shared tiny run (its models,
    samples and metrics are current, so only the ablation, solver and long-NFE jobs and
    the reports run), in its git repository with the new params committed (HEAD holds the workflow
    and the config the numbers come from). ``DDM_TEST_REPORT_RUN=<dir>`` reuses (and updates) a run
    there: a developer shortcut."""
    if shutil.which("git") is None or not (tiny_run / ".git").is_dir():
        pytest.skip("git is not installed")
    reuse = os.environ.get("DDM_TEST_REPORT_RUN")
    work = Path(reuse) if reuse and (Path(reuse) / "Snakefile").exists() else None
    if work is None:
        work = copy_run(tiny_run, Path(reuse) if reuse else tmp_path_factory.mktemp("report") / "repo")
        write_params(work, everything_on())  # as it is: overrides would merge into the full method tables
        with open(work / "ddm" / "data" / "published.csv", "a") as f:
            f.write("\n".join(PUBLISHED_ROWS) + "\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "every switch on")
    else:
        run_snakemake(work, "--unlock", timeout=300)
    extra = ["--rerun-incomplete", "--forcerun", "stats"] if reuse else []  # stats: the commit may be new
    r = run_snakemake(work, "--cores", CORES, *extra, "all", timeout=RUN_TIMEOUT, env=dvc_env(work))
    if r.returncode != 0:
        pytest.fail(f"snakemake all (every switch on) failed in {work}:\n{r.output[-6000:]}", pytrace=False)
    print(f"snakemake all, every switch on, after the tiny run: {r.elapsed:.0f} s")
    return SimpleNamespace(work=work, run=r, commit=git(work, "rev-parse", "HEAD"))


def pdf_text(pdf: Path, *pages: int) -> str:
    args = ["-f", str(pages[0]), "-l", str(pages[-1])] if pages else []
    r = subprocess.run(["pdftotext", "-layout", *args, str(pdf), "-"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pdf_pages(pdf: Path) -> int:
    r = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(re.search(r"^Pages:\s+(\d+)$", r.stdout, flags=re.M).group(1))


def captions(tex: str) -> list[str]:
    """Each table's caption (Tables 2 and 3 put a \\resizebox between it and the tabular)."""
    return re.findall(r"\\caption\{(.*?)\n(?:\\resizebox\{[^\n]*\n)?\\begin\{tabular\}", tex, flags=re.S)


# --------------------------------------------------------------------------- tables.tex
@needs_latex
def test_tables_compile_with_every_switch(full_run, tmp_path):
    from test_report import compile_tables

    tex = (full_run.work / "reports/tables.tex").read_text()
    assert len(captions(tex)) == 6, "Tables 1-5 and the fair-solver table"
    row = next(line for line in tex.splitlines() if line.startswith("Yun"))
    assert row.startswith(r"Yun \& Lin 100\% net\_v2 \#1\reported{}") and r"1M \& 5\%" in row
    assert re.search(r" & 12\.34 & 5\.67\b", row), row
    r = compile_tables(tex, tmp_path)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert r.returncode == 0, r.stdout[-3000:]
    assert not re.search(r"^!|LaTeX Error|Undefined control sequence|Missing \$ inserted", log, flags=re.M), log[-3000:]
    if shutil.which("pdftotext"):
        text = pdf_text(tmp_path / "doc.pdf")
        assert "Yun & Lin 100% net" in text and "1M & 5%" in text


def test_the_twin_rows_come_from_one_training(full_run):
    """The real graph: Table 4's h_t = c and Table 1's DDM are one network (one model file, one
    training job), both rows are in metrics.json with the same values, and Table 4 marks the row."""
    models = {p.name for p in (full_run.work / "results/models/digits").glob("*.pt")}
    assert "ddm.pt" in models and "ht_constant.pt" not in models and "ht_linear.pt" in models, models
    assert not (full_run.work / "logs/train/digits/ht_constant.log").exists()
    metrics = json.loads((full_run.work / "reports/metrics.json").read_text())
    res = metrics["datasets"]["digits"]["results"]
    assert res["ddm"]["2"]["values"][0] == res["ht_constant"]["2"]["values"][0]  # one network, the same seeds
    assert metrics["shared_networks"] == {"ht_constant": "ddm"}
    tex = (full_run.work / "reports/tables.tex").read_text()
    assert r"$\mathbf{c}$$^\dagger$ &" in tex and "trained once and sampled for both rows ($\\mathbf{c}$: the network of DDM" in tex


# --------------------------------------------------------------------------- report.pdf
@needs_latex
@needs_poppler
def test_report_pdf_has_a_page_per_table_and_figure(full_run, tmp_path):
    work = full_run.work
    pdf = work / "reports/report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    tex = (work / "reports/tables.tex").read_text()
    figures = [p.name for p in (work / "reports/figures").glob("*.png")]
    grids = {re.match(r"samples_(\w+)_nfe\d+\.png$", f).group(1) for f in figures if f.startswith("samples_")}
    assert len(grids) == len(load_params(work / "params.yaml")["methods"])
    figure_pages = len(grids) + len([f for f in figures if not f.startswith("samples_")])  # NFEs side by side
    n = pdf_pages(pdf)
    log = (work / "logs/report_pdf.log").read_text(errors="replace")
    assert not re.search(r"^!|LaTeX Error|Undefined control sequence", log, flags=re.M), log[-3000:]
    pages = [" ".join(pdf_text(pdf, i).split()) for i in range(1, n + 1)]
    assert full_run.commit[:12] in pages[0] and "Provenance: commit" in pages[0]
    # the title page and the claim verdicts (one page or two), then one page per table and per figure
    first = next(i for i, page in enumerate(pages) if "Unconditional generation on Digits" in page)
    assert any("claims in this run" in page for page in pages[:first]) and first <= 2, (first, pages[:first])
    assert n == first + len(captions(tex)) + figure_pages, (n, first)
    for i, want in enumerate(("Unconditional generation on Digits", "Choices of h", "Table 5", "fair-solver comparison")):
        assert want in pages[first + i] and "Provenance: commit" in pages[first + i], f"page {first + 1 + i} lacks {want!r}"
    assert "Yun & Lin 100% net" in pages[first]
    for want in ("FID against NFE on Digits", "Samples of DDM (ours) on Digits", "Fig. 3 (left)"):
        assert sum(want in page for page in pages[first + 4:]) == 1, f"no single figure page with {want!r}"
    # the README's picture of the first page: pdftoppm makes it
    if shutil.which("pdftoppm"):
        r = sh(work, "pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(tmp_path / "page1"))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "page1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_latex
def test_rebuilding_gives_the_same_bytes(full_run, tmp_path):
    """tables.tex and report.pdf depend on their inputs only (no clock at render time)."""
    work = full_run.work
    r = run_ddm(work, "report", "--metrics", "reports/metrics.json", "--published", "ddm/data/published.csv",
                "--out", str(tmp_path / "tables.tex"))  # the run's published rows (its ddm/ copy)
    assert r.returncode == 0, r.output
    assert (tmp_path / "tables.tex").read_bytes() == (work / "reports/tables.tex").read_bytes()
    figures = sorted(str(p.relative_to(work)) for p in (work / "reports/figures").glob("*.png"))
    r = run_ddm(work, "report-pdf", "--template", "reports/report.tex.j2", "--tables", "reports/tables.tex",
                "--metrics", "reports/metrics.json", "--figures", *figures, "--latex", LATEX,
                "--claims", "reports/claims.tex", "--out", str(tmp_path / "report.pdf"))
    assert r.returncode == 0, r.output
    assert (tmp_path / "report.pdf").read_bytes() == (work / "reports/report.pdf").read_bytes()


# --------------------------------------------------------------------------- provenance
def test_provenance_names_the_commit_params_dates_and_versions(full_run):
    work = full_run.work
    prov = json.loads((work / "reports/metrics.json").read_text())["provenance"]
    assert prov["git_commit"] == full_run.commit and prov["git_dirty"] is False
    results = json.loads((work / "reports/metrics.json").read_text())["datasets"]
    files = [json.loads(p.read_text()) for p in sorted((work / "results/metrics").rglob("*.json"))]
    records = [r for r in files if "dataset" in r and "nfe" in r
               and str(r["nfe"]) in results[r["dataset"]]["results"].get(r["method"], {})]
    tasks = [r for r in files if "task" in r]  # Tables 2 and 3: sample sets and references
    # and the autoencoders of latent tasks (their reconstruction PSNR is in Table 2's caption)
    tasks += [json.loads(p.read_text()) for p in sorted((work / "results/models/autoencoder").glob("*.json"))]
    assert len(records) == sum(v["n"] for d in results.values() for m in d["results"].values() for v in m.values())
    stamps = sorted(r["computed_at"] for r in records + tasks)
    assert (prov["computed_first"], prov["computed_last"]) == (stamps[0], stamps[-1])
    assert prov["params_hash"] == params_hash(load_params(work / "params.yaml"),
                                              [(r["dataset"], r["method"]) for r in records],
                                              [(r["task"], r["method"]) for r in tasks if "method" in r])
    assert prov["versions"] == package_versions() and set(prov["versions"]) == {"torch", "snakemake", "dvc", "torch-fidelity"}

    tex = (work / "reports/tables.tex").read_text()
    line = re.search(r"^% Provenance: commit (\w+)(, dirty)?; params (\w+); computed ([^;]+);", tex, flags=re.M)
    assert line, tex[:2000]
    assert line.group(1) == git(work, "rev-parse", "HEAD") and line.group(2) is None
    assert line.group(3) == prov["params_hash"]
    assert line.group(4) == (stamps[-1] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}")
    footnote = re.search(r"\\renewcommand\{\\ddmprovenance\}\{.*Provenance: commit (\w+), params (\w+), "
                         r"computed ([\d-]+(?: to [\d-]+)?); torch ([^,]+), snakemake ([^,]+), dvc ([^,]+), "
                         r"torch-fidelity (\S+?)\.\}\}$",
                         tex, flags=re.M)
    assert footnote, tex[:2000]
    assert footnote.group(1) == full_run.commit[:12] and footnote.group(2) == prov["params_hash"]
    days = (stamps[0][:10], stamps[-1][:10])  # a run across midnight (UTC) names both days
    assert footnote.group(3) == (days[1] if days[0] == days[1] else f"{days[0]} to {days[1]}")
    assert footnote.groups()[3:] == tuple(prov["versions"][k] for k in ("torch", "snakemake", "dvc", "torch-fidelity"))
    assert all(c.rstrip().endswith(r"\ddmprovenance}") for c in captions(tex)), "every table carries the line"


# --------------------------------------------------------------------------- Snakemake's report
def test_snakemake_report_shows_figures_and_tables(full_run, tmp_path):
    work = copy_run(full_run.work, tmp_path / "run")
    r = run_snakemake(work, "--report", "reports/report.html", timeout=600)
    assert r.returncode == 0, r.output[-4000:]
    html = (work / "reports/report.html").read_text(errors="replace")
    for name in ("fid_vs_nfe_digits.png", "samples_digits_ddm_nfe2.png", "fig3_digits.png", "tables.tex",
                 "metrics.json", "report.pdf"):
        assert name in html, f"{name} is not in Snakemake's report"


# --------------------------------------------------------------------------- without LaTeX
def path_without_latex(tmp_path: Path) -> str:
    """A PATH with every program of this one except the LaTeX programs (links in one folder)."""
    farm = tmp_path / "bin-without-latex"
    farm.mkdir()
    hidden = {"latexmk", "pdflatex", "latex", "pdftex", "lualatex", "xelatex"}
    for folder in [str(BIN), *os.environ.get("PATH", "").split(os.pathsep)]:
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            target = farm / entry.name
            if entry.name not in hidden and not target.exists() and not target.is_symlink():
                target.symlink_to(entry)
    return str(farm)


@needs_poppler
def test_without_latex_the_pdf_is_a_placeholder_and_the_rest_builds(full_run, tmp_path):
    work = copy_run(full_run.work, tmp_path / "run")
    path = path_without_latex(tmp_path)
    assert shutil.which("pdflatex", path=path) is None and shutil.which("latexmk", path=path) is None
    (work / "reports/tables.tex").unlink()
    (work / "reports/figures/fid_vs_nfe_digits.png").unlink()
    r = run_snakemake(work, "--cores", CORES, "all", env={"PATH": path}, timeout=600)
    assert r.returncode == 0, r.output[-4000:]
    assert (work / "reports/tables.tex").is_file() and (work / "reports/figures/fid_vs_nfe_digits.png").is_file()
    notice = [line for line in r.output.splitlines() if "no pdflatex on PATH" in line]
    assert notice and all(LATEX_PACKAGES in line for line in notice), r.output[-4000:]
    pdf = work / "reports/report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf_pages(pdf) == 1
    text = " ".join(pdf_text(pdf).split())
    assert "was not built" in text and "texlive-latex-base" in text
    # with LaTeX back on PATH, Snakemake rebuilds the PDF (the LaTeX program is the rule's param)
    again = run_snakemake(work, "-n", "all", timeout=300)
    assert again.returncode == 0, again.output[-3000:]
    from test_pipeline import job_stats

    if LATEX:
        assert set(job_stats(again.output)) == {"report_pdf", "all"}, again.output[-3000:]
        assert "params have changed since last execution:\n        report_pdf" in again.output


# --------------------------------------------------------------------------- DVC
def test_dvc_metrics_plots_and_exp_show(full_run, tmp_path):
    """DVC reads what dvc.yaml declares from the generated files: metrics, plots, experiments."""
    from conftest import REPO

    work = copy_run(full_run.work, tmp_path / "run")  # a git + DVC repository (the tiny run's)
    assert (work / ".dvc").is_dir() and (work / "dvc.yaml").read_bytes() == (REPO / "dvc.yaml").read_bytes()
    env = {"DVC_NO_ANALYTICS": "1", **GIT_ENV}

    r = sh(work, str(BIN / "dvc"), "metrics", "show", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = json.loads(r.stdout)
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert data["datasets"]["digits"]["results"]["ddm"]["2"]["mean"] == metrics["datasets"]["digits"]["results"]["ddm"]["2"]["mean"]

    r = sh(work, str(BIN / "dvc"), "plots", "show", "-o", str(tmp_path / "plots"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (tmp_path / "plots" / "index.html").read_text(errors="replace")
    assert "fid_vs_nfe_digits" in html and "results/curves/digits/ddm.csv" in html

    r = sh(work, str(BIN / "dvc"), "exp", "show", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    shown_params = json.loads(r.stdout)[0]["data"]["params"]["params.yaml"]["data"]
    assert set(shown_params["ablation_methods"]) == set(KEEP["ablation_methods"]) and shown_params["solver_study"]
    assert "git_commit" in r.stdout  # reports/metrics.json's provenance
