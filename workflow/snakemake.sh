#!/bin/sh
# The Snakemake that DVC's stages run (dvc.yaml: `sh workflow/snakemake.sh --cores all phase_<name>`),
# found without relying on an activated environment: `.venv/bin/dvc repro` typed in a plain shell
# must work too. In order:
#   1. $DDM_SNAKEMAKE, if set (a command, e.g. /opt/envs/ddm/bin/snakemake);
#   2. .venv/bin/snakemake at the repository root (the environment ./setup.sh makes);
#   3. snakemake on PATH (an activated environment, a cluster module).
# Snakemake then runs `ddm` with its own interpreter (workflow/rules/common.smk: DDM).
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
if [ -n "${DDM_SNAKEMAKE:-}" ]; then
    exec $DDM_SNAKEMAKE "$@"
elif [ -x "$root/.venv/bin/snakemake" ]; then
    exec "$root/.venv/bin/snakemake" "$@"
elif command -v snakemake >/dev/null 2>&1; then
    exec snakemake "$@"
fi
echo "workflow/snakemake.sh: Snakemake not found: no $root/.venv/bin/snakemake and none on PATH;" \
     "run ./setup.sh, activate the environment that has Snakemake, or set DDM_SNAKEMAKE" >&2
exit 127
