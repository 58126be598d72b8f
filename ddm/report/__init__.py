"""Metrics -> statistics -> LaTeX tables, figures and the PDF report (Tables 1-5; Fig. 3; FID vs
NFE), one module per job:

* ``ddm.report.labels``: what the report calls methods and datasets; ``latex_escape``;
* ``ddm.report.collect``: metric files -> reports/metrics.csv (``metric_records``, ``records_csv``)
  and the numbers of reports/metrics.json: mean +- std and Table 1's markers (``collect``), the
  conditioned tasks' section (``collect_conditioned``);
* ``ddm.report.tables``: reports/metrics.json -> reports/tables.tex (``render_tables``) through the
  package's jinja2 templates (``template_env``);
* ``ddm.report.figures``: the PNG figures (FID against NFE, sample grids, task figures, Fig. 3, FID
  against training step);
* ``ddm.report.provenance``: git commit, params hash, dates and package versions of the numbers;
* ``ddm.report.pdf``: reports/report.pdf (LaTeX, or a placeholder page without it).

Import from the module (``from ddm.report.tables import render_tables``): this file imports none
of them. A package's ``__init__`` runs whenever one of its modules is imported, and
``ddm.codedeps`` reruns a subcommand's jobs when a module it imports changes, so re-exports here
would tie every report job to every report module.
"""
