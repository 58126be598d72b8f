# The functions that only the rules of workflow/rules/report.smk use (the stats and tables phases:
# what the stats rule reads of the conditioned tasks). report.smk includes this file before its
# rules: a rule file holds rules only (`snakemake --lint`). Functions of several rule files, and the
# names they share (config, PRESET, DATASETS, ...), are in workflow/rules/common.smk.


def task_metric_files():
    """What `ddm stats` reads of the conditioned tasks (Tables 2 and 3), the files of
    `ddm evaluate-task` (per sample set, and each task's reference.json) and each latent task's
    autoencoder PSNR file."""
    return [f for t in TASK_NAMES for f in task_metric_outputs(t)] + [f for t in TASK_NAMES for f in autoencoder_files(t)[1:]]
