"""A configuration's Snakemake graph for the plan before submitting (``python -m ddm.plan``):
the ``--config`` overrides typed as Snakemake types them, params.yaml with each ``--configfile``
merged and validated as the Snakefile validates it, and the jobs of Snakemake's own dry run.

Imports Snakemake (the ``pipeline`` extra) inside its functions: it runs beside the pipeline,
never in a job."""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
from pathlib import Path

from ddm import plugins
from ddm.yamlio import ConfigError, config_layers


def parse_overrides(entries) -> dict:
    """``--config k=v`` entries, typed as Snakemake types them; an entry Snakemake cannot parse is a
    one-line ConfigError naming it."""
    from snakemake.cli import parse_config

    for entry in entries or []:
        try:
            parse_config([entry])
        except ValueError as e:
            why = str(e).removeprefix("Invalid config definition: ").split(" (Unparsable")[0].rstrip(".")
            raise ConfigError(f"--config {entry}: {why}; give KEY=VALUE with a key of params.yaml "
                              "(Snakemake's keys have at least 2 characters), e.g. ht=linear") from None
    return parse_config(entries or [])


def merged_config(workdir: Path, overrides: dict, configfiles=()) -> dict:
    """params.yaml, then each ``--configfile`` (key by key), then the ``--config`` overrides: Snakemake's
    order; with the plug-ins loaded (``ddm.plugins``) and the merged config validated as the Snakefile
    validates it, before Snakemake starts: a bad input (an unknown preset, a value out of range, a YAML
    syntax error, a file that is not a mapping) is a one-line ConfigError naming the file and line."""
    from snakemake.utils import update_config

    from ddm.validation import validate

    workdir = Path(workdir)
    for f in configfiles:
        if not (workdir / f).is_file():
            raise ConfigError(f"--configfile {f}: no such file under {workdir} (give a path relative to the "
                              "folder holding the Snakefile, e.g. runs/converged.yaml)")
    layers = config_layers(workdir / "params.yaml", [workdir / f for f in configfiles], overrides)
    cfg: dict = {}
    for layer in layers:
        update_config(cfg, copy.deepcopy(layer.data))
    plugins.load(cfg.get("plugins"), workdir)  # before validating, as every job (ddm.plugins)
    validate(cfg, layers[0].name, tuple(layers) if len(layers) > 1 else ())
    return cfg


def graph_jobs(workdir, overrides: dict, *, targets=("all",), forceall: bool = True, configfiles=()) -> list[dict]:
    """Every job of Snakemake's dry run for ``targets``: rule, wildcards, shell command, threads."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings
    from snakemake_interface_common.exceptions import WorkflowError
    from snakemake_interface_logger_plugins.common import LogEvent

    jobs = []

    class Jobs(logging.Handler):
        def emit(self, record):
            if getattr(record, "event", None) == LogEvent.JOB_INFO:
                jobs.append({"rule": record.rule_name, "wildcards": dict(record.wildcards or {}),
                             "shell": record.shellcmd or "", "threads": record.threads})

    handler = Jobs(logging.DEBUG)
    logger = logging.getLogger("snakemake")
    # the Snakefile sets DDM_PARAMS for its jobs, and Snakemake its signal handlers: neither outlives the plan
    environ = dict(os.environ)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        logger.addHandler(handler)
        try:
            wf = api.workflow(resource_settings=ResourceSettings(cores=1),
                              config_settings=ConfigSettings(config=overrides,
                                                             configfiles=[Path(workdir) / f for f in configfiles]),
                              snakefile=Path(workdir) / "Snakefile", workdir=Path(workdir))
            wf.dag(DAGSettings(targets=set(targets), forceall=forceall)).execute_workflow(executor="dryrun")
        except WorkflowError as e:  # what the checks before it do not cover: Snakemake's first line
            said = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            raise ConfigError(f"Snakemake cannot build the graph: {said[0]}") from None
        finally:
            logger.removeHandler(handler)
            os.environ.clear()
            os.environ.update(environ)
            if threading.current_thread() is threading.main_thread():  # (signals are set there only)
                for sig, handler_ in handlers.items():
                    signal.signal(sig, handler_)
    return jobs
