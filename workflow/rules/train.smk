# Phase "train": one model per (dataset, method). Checkpoints live in results/checkpoints/,
# outside the rule's output, keyed by the hash of the resolved config: a preempted or failed
# job resumes where it stopped (the profile's `retries`), a changed config starts afresh.
#
# Launch geometry per dataset, from params.yaml `train.gpus` (processes per node) and
# `train.nodes` (default 1 and 1):
#   1 x 1   `python -m ddm train ...` (as the SLURM profile's job step: srun -n1 inside sbatch)
#   K x 1   `python -m torch.distributed.run --standalone --nproc_per_node=K -m ddm train ...`
#   K x N   `srun --nodes=N --ntasks-per-node=1 python -m torch.distributed.run --nnodes=N
#            --nproc_per_node=K --rdzv_endpoint=<first node> -m ddm train ...` (SLURM only: the
#            job runs its own srun, Snakemake's `mpi` resource, one torchrun per node)
# The global batch and the result do not depend on K x N (ddm.training): only the speed does.
# SLURM request (the plugin turns these resources into sbatch options): --gres=gpu:K per node,
# --nodes=N and --ntasks=N for N > 1; partition, memory, time and the USR1 warning come from
# the profile (slurm/config.yaml). Helpers: train_geometry, train_launcher (helpers/train.smk).

include: "helpers/train.smk"  # the functions only these rules use


rule train:
    input:
        "data/prepared/{dataset}.pt",
    output:
        model="results/models/{dataset}/{method}.pt",
        curve="results/curves/{dataset}/{method}.csv",
    params:
        ddm=train_launcher,
        code=code_of("train"),
        cfg=training_config,
        proc_threads=train_threads_per_process,
    log:
        "logs/train/{dataset}/{method}.log",
    threads: 1
    priority: 10  # the longest jobs first: the rest fills the other cores around them
    resources:
        # Snakemake's own count (local scheduling); the SLURM profile sets it to 0 (see there)
        gpus=lambda wc: train_geometry(wc)[0] * train_geometry(wc)[1],
        gres=lambda wc: f"gpu:{train_geometry(wc)[0]}",  # per node
        nodes=lambda wc: train_geometry(wc)[1] if train_geometry(wc)[1] > 1 else None,
        # several nodes: the job runs its own srun (one task per node), not the plugin's
        mpi=lambda wc: "srun" if train_geometry(wc)[1] > 1 else None,
        tasks=lambda wc: train_geometry(wc)[1] if train_geometry(wc)[1] > 1 else None,
        tasks_per_gpu=lambda wc: 0 if train_geometry(wc)[1] > 1 else None,  # no --ntasks-per-gpu
    conda:
        "../envs/ddm.yaml"
    shell:
        "export DDM_THREADS={params.proc_threads}; {params.ddm} train --dataset {wildcards.dataset} --method {wildcards.method} "
        "--data {input} --checkpoints results/checkpoints/{wildcards.dataset} --out {output.model} --curve {output.curve} "
        "> {log} 2>&1"


rule phase_train:
    input:
        phase_outputs("train"),
        verified_before_run("train"),  # its products verified first (common.smk)
