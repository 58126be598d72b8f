"""The package's data files, found through :mod:`importlib.resources` wherever ddm is installed.

Installed ``ddm`` is self-contained: the parameter schema, the published results of Table 1 and
the LaTeX templates ship inside the package (``[tool.setuptools.package-data]`` of
pyproject.toml: ``templates/*`` and ``data/*``), so a wheel installed outside the repository
validates params.yaml and writes the tables without the repository's ``workflow/`` folder.

One name per file (ddm.codedeps finds the files a ``ddm`` subcommand reads by these names, and
tests/test_codedeps.py checks that every data file has one); the modules that use them import them
from here (``ddm.validation``: ``SCHEMA_PATH``; ``ddm.report.tables``: ``PUBLISHED_CSV``,
``TABLES_TEMPLATE``). This module imports nothing beyond the standard library, so the Snakefile and
``ddm --help`` may import it cheaply.

The constants are :class:`importlib.resources.abc.Traversable`; for an installed folder (a
wheel, an editable install, a checkout) that is a :class:`pathlib.Path` to the real file.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["DATA", "SCHEMA_PATH", "PUBLISHED_CSV", "THROUGHPUT", "TEMPLATES", "TABLES_TEMPLATE", "CLAIMS_TEMPLATE"]

#: ddm/data: the package's data files.
DATA = files("ddm") / "data"
#: JSON schema (as YAML) of params.yaml; ``ddm.validation.validate`` (the Snakefile's check) reads it.
SCHEMA_PATH = DATA / "params.schema.yaml"
#: Published results shown beside the measured ones in Table 1 (columns table, dataset, method,
#: params, nfe, value, source); the default of ``ddm report --published``.
PUBLISHED_CSV = DATA / "published.csv"
#: Throughput table of the plan before submitting (``python -m ddm.plan``): measured and estimated
#: FLOP/s per device and kind of work.
THROUGHPUT = DATA / "throughput.yaml"
#: ddm/templates: the jinja2 templates of ``ddm.report.tables`` (and ``ddm.claims``).
TEMPLATES = files("ddm") / "templates"
#: reports/tables.tex's template (``ddm.report.tables.render_tables``).
TABLES_TEMPLATE = TEMPLATES / "tables.tex.j2"
#: reports/claims.tex's template (``ddm.claims.render_claims``).
CLAIMS_TEMPLATE = TEMPLATES / "claims.tex.j2"
