# The DDM reproducibility pipeline: params.yaml -> data -> FID reference -> training per
# configuration -> samples per (configuration, NFE, repeat) -> FID -> t-tests -> reports/tables.tex;
# with `conditioned: true` also the conditioned tasks of Tables 2 and 3 (workflow/rules/tasks.smk).
#   snakemake all                   (workflow/profiles/default: local cores)
#   snakemake --profile slurm all   (SLURM; see README "Running on a SLURM cluster")
from snakemake.utils import min_version

from ddm.config import ConfigError, read_yaml, validate as validate_params

min_version("8.0")

try:  # a YAML syntax error with its line number (Snakemake's own message has none)
    read_yaml("params.yaml")
except ConfigError as e:
    raise WorkflowError(str(e)) from None

configfile: "params.yaml"

# ddm.config only: the schema (the package's ddm/data/params.schema.yaml, its lists of names filled
# from the registries, so an h_t family or sampler registered outside the package validates) and the
# checks beyond it (sampler/grid fit a process, ...), in the one-line messages `ddm` gives.
try:
    validate_params(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/tasks.smk"  # conditioned generation, Tables 2 and 3 (`conditioned: true`)
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),  # every product of every phase (workflow/rules/common.smk: phase_outputs)
    default_target: True


onsuccess:
    record_in_dvc()
