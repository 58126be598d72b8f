# The DDM reproducibility pipeline: params.yaml -> data -> FID reference -> training per
# configuration -> samples per (configuration, NFE, repeat) -> FID -> t-tests -> reports/tables.tex;
# with `conditioned: true` also the conditioned tasks of Tables 2 and 3 (workflow/rules/tasks.smk).
#   snakemake all                   (workflow/profiles/default: local cores)
#   snakemake --profile slurm all   (SLURM; see README "Running on a SLURM cluster")
import os

from snakemake.utils import min_version

from ddm.validation import validate as validate_params
from ddm.plugins import load as load_plugins
from ddm.yamlio import ConfigError, config_layers

min_version("8.0")

# Each file of the config, read with its lines: params.yaml (unless --replace-workflow-config), each
# --configfile, then --config. A YAML syntax error or a duplicate key names the file and the line, and
# an error of the merged config names the file (and line) that set the value. (An empty or malformed
# --configfile is refused by Snakemake's command line before this file runs.)
_settings = workflow.config_settings
try:
    CONFIG_LAYERS = config_layers(None if _settings.replace_workflow_config else "params.yaml",
                                  _settings.configfiles, _settings.config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

configfile: "params.yaml"

# ddm.validation only: the schema (the package's ddm/data/params.schema.yaml, its lists of names filled
# from the registries, so an h_t family or sampler registered outside the package validates) and the
# checks beyond it (sampler/grid fit a process, finite numbers, NFE and sample counts that fit in
# memory, ...), in the one-line messages `ddm` gives.
# First the plug-ins (`plugins:`, ddm/plugins.py): their families, samplers, datasets, ... then validate.
# File entries become absolute paths, which the jobs read from their params file wherever it lies.
try:
    if config.get("plugins"):
        config["plugins"] = load_plugins(config["plugins"], os.getcwd(), "params.yaml")
    validate_params(config, layers=tuple(CONFIG_LAYERS) if len(CONFIG_LAYERS) > 1 else ())
except ConfigError as e:
    raise WorkflowError(str(e)) from None


onstart:  # a real run with jobs to run, before the first: not a dry run
    _folder = unwritable_folder()
    if _folder:
        raise WorkflowError(f"{_folder}/ is not writable (a read-only folder or file system), so the jobs that "
                            f"write there would fail: make it writable (chmod -R u+w {_folder}, or mount it "
                            "read-write), or run in a writable copy of the project")

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/tasks.smk"  # conditioned generation, Tables 2 and 3 (`conditioned: true`)
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),  # every product of every phase (workflow/rules/common.smk: phase_outputs)
        verified_before_run(),  # every existing product verified first (common.smk)
    default_target: True


onsuccess:
    record_in_dvc()
