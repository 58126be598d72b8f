# The DDM reproducibility pipeline: params.yaml -> data -> FID reference -> training per
# configuration -> samples per (configuration, NFE, repeat) -> FID -> t-tests -> reports/tables.tex.
#   snakemake all                   (workflow/profiles/default: local cores)
#   snakemake --profile slurm all   (SLURM; see README "Running on a SLURM cluster")
from snakemake.utils import min_version, validate

min_version("8.0")

configfile: "params.yaml"

validate(config, "workflow/schemas/params.schema.yaml")

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports/tables.tex",
        "reports/metrics.json",
        figure_files(),
    default_target: True
