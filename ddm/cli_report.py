"""The ``ddm`` subcommands of the report phase (``ddm stats``, ``report``, ``report-pdf``,
``figures``, ``grid``, ``fig3-plot``, ``convergence-plot``, ``compare``): thin adapters over
``ddm.report``'s modules, ``ddm.claims`` and ``ddm.compare``, as those of ddm/cli.py."""

from __future__ import annotations

import logging
from pathlib import Path

from ddm.cli_base import add_command, read_params, save_output
from ddm.contracts import check_metric_files, check_task_metric_files, load_images, load_json_product
from ddm.io import (InputError, OutputError, check_input_file as _input_file, check_output as _check_out, save_json,
                    save_text, writing as _writing)

log = logging.getLogger("ddm")


def cmd_stats(args) -> None:
    params = read_params(args)
    check_metric_files(args.inputs, params, args.params)
    check_task_metric_files(args.task_metrics or [])  # the conditioned tasks (Tables 2 and 3)
    _check_out(args.out)
    if args.csv:
        _check_out(args.csv, "--csv")
    from ddm.report.collect import collect_metrics, records_csv  # torch: once the checks passed

    metrics, records = collect_metrics(args.inputs, params, models=args.models or (), convergence=args.convergence,
                                       task_metrics=args.task_metrics)
    save_output(save_json, metrics, args.out)
    if args.csv:
        save_output(save_text, records_csv(records), args.csv)


def cmd_convergence_plot(args) -> None:
    from ddm.report.figures import convergence_plot

    for p in args.inputs:
        load_json_product(p, "convergence")
    _check_out(args.out)
    with _writing(args.out):
        convergence_plot([Path(p) for p in args.inputs], Path(args.out))


def cmd_report(args) -> None:
    from ddm.claims import render_tables_and_claims
    from ddm.report.tables import check_published_csv, nonfinite_cells

    metrics = load_json_product(args.metrics, "metrics")
    bad = nonfinite_cells(metrics)
    if bad:
        raise InputError(f"metrics file {args.metrics}: {bad[0]} is not a finite number"
                         f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}: a table cannot show it; "
                         "make it again with `ddm stats` from finite FIDs")
    published = check_published_csv(args.published)
    _check_out(args.out)
    fig3 = None
    if args.claims:  # a verdict per claim of the paper (ddm.claims); Fig. 3's curves by dataset (folder name)
        fig3 = {Path(f).parent.name: load_json_product(f, "fig3") for f in args.fig3}
        _check_out(args.claims)
    text, claims = render_tables_and_claims(metrics, published, fig3)
    save_output(save_text, text, args.out)
    if args.claims:
        save_output(save_text, claims, args.claims)


def cmd_report_pdf(args) -> None:
    from ddm.report.pdf import ReportError, build_report_pdf, no_latex_message

    load_json_product(args.metrics, "metrics")
    for path in (args.template, args.tables, *([args.claims] if args.claims else []), *args.figures):
        _input_file(path, "report input")
    _check_out(args.out)
    latex = None if args.latex == "none" else args.latex
    if latex is None:
        log.warning("%s", no_latex_message(args.out))
    try:
        with _writing(args.out):
            build_report_pdf(Path(args.template), Path(args.tables), Path(args.metrics), args.figures, Path(args.out), latex,
                             claims=Path(args.claims) if args.claims else None)
    except ReportError as e:
        raise OutputError(f"cannot build {args.out}: {e}") from None


def cmd_figures(args) -> None:
    from ddm.report.figures import fid_plot

    metrics = load_json_product(args.metrics, "metrics")
    _check_out(args.out)
    try:
        with _writing(args.out):
            fid_plot(metrics, args.dataset, Path(args.out))
    except InputError as e:
        raise InputError(f"metrics file {args.metrics}: {e}") from None


def cmd_grid(args) -> None:
    from ddm.report.figures import sample_grid

    load_images(args.samples)
    _check_out(args.out)
    with _writing(args.out):
        sample_grid(Path(args.samples), args.title, Path(args.out))


def cmd_fig3_plot(args) -> None:
    from ddm.report.figures import fig3_plot

    load_json_product(args.curves, "fig3")
    _check_out(args.out)
    with _writing(args.out):
        fig3_plot(Path(args.curves), Path(args.out))


def cmd_compare(args) -> int:
    from ddm.compare import compare, format_comparison, load_run, to_json

    c = compare(load_run(args.run_a), load_run(args.run_b), tolerance=args.tolerance,
                shift_tolerance=args.shift_tolerance, rel_tolerance=args.rel_tolerance)
    print(to_json(c) if args.json else format_comparison(c, Path(args.run_a).name or "A", Path(args.run_b).name or "B"))
    return 1 if c.flagged else 0


def add_report_steps(sub) -> None:
    """The subcommands of the report phase: metrics, tables, claims, figures, the PDF, a comparison."""
    s = add_command(sub, "stats", cmd_stats, "mean +- std over repeats and Table 1's t-test markers", "out")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--models", nargs="*", help="trained model files (Table 1's Param column)")
    s.add_argument("--csv", help="also write the metric files as one table, a row per sample set (CSV)")
    s.add_argument("--convergence", nargs="*", help="files of `ddm convergence`: the plateau check of each model")
    s.add_argument("--task-metrics", nargs="*", help="files of `ddm evaluate-task` (Tables 2 and 3): per sample "
                   "set, and each task's reference.json; and of `ddm train-autoencoder` (latent tasks)")
    s = add_command(sub, "report", cmd_report, "reports/tables.tex from reports/metrics.json", "metrics", "out")
    s.add_argument("--published", help="published results shown beside the measured ones (default: the "
                   "package's ddm/data/published.csv)")
    s.add_argument("--claims", help="also write a verdict per claim of the paper (LaTeX; reports/claims.tex)")
    s.add_argument("--fig3", nargs="*", default=[], help="Fig. 3's curves (results/metrics/<dataset>/fig3.json), "
                   "the evidence of its claim in --claims")
    add_command(sub, "figures", cmd_figures, "FID-vs-NFE plot of one dataset", "metrics", "dataset", "out")
    s = add_command(sub, "report-pdf", cmd_report_pdf, "reports/report.pdf: tables and figures", "template", "tables",
                    "metrics", "out")
    s.add_argument("--figures", nargs="*", default=[])
    s.add_argument("--latex", default="none", help="latexmk or pdflatex to use; none: a placeholder page")
    s.add_argument("--claims", help="reports/claims.tex (`ddm report --claims`), shown on the first page")
    s = add_command(sub, "grid", cmd_grid, "sample grid of a sample file", "samples", "out")
    s.add_argument("--title", default="")
    add_command(sub, "fig3-plot", cmd_fig3_plot, "plot of the Fig. 3 curves", "curves", "out")
    s = add_command(sub, "convergence-plot", cmd_convergence_plot, "plot of FID against training step", "out")
    s.add_argument("--inputs", nargs="+", required=True)
    _add_compare(sub)


def _add_compare(sub) -> None:
    from ddm import compare  # codedeps: names only (the defaults of its options; cmd_compare runs it)

    s = add_command(sub, "compare", cmd_compare, "two runs' table cells side by side and every verdict that changed "
             "(exit 1 when a cell moves beyond its tolerance or a verdict flips)")
    s.add_argument("run_a", help="a run's folder (its reports/metrics.json) or a metrics.json file")
    s.add_argument("run_b", help="the run to hold against it")
    real = {"type": float}
    s.add_argument("--tolerance", default=compare.TOLERANCE, **real, help="a cell may move this many stds "
                   f"(default {compare.TOLERANCE:g})")
    s.add_argument("--shift-tolerance", default=compare.SHIFT_TOLERANCE, **real, help="the mean move of all cells "
                   f"may be this many stds (default {compare.SHIFT_TOLERANCE:g})")
    s.add_argument("--rel-tolerance", default=compare.REL_TOLERANCE, **real, help="a cell without a std may move "
                   f"this fraction (default {compare.REL_TOLERANCE:g})")
    s.add_argument("--json", action="store_true", help="print the comparison as JSON")
