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
# the profile (slurm/config.yaml).


def train_geometry(wc):
    """(processes per node, nodes) of a training job: params.yaml train.gpus / train.nodes."""
    t = resolve(config, wc.dataset, wc.method)["train"]
    return int(t.get("gpus", 1)), int(t.get("nodes", 1))


def _python():
    return "python" if _uses_conda() else shlex.quote(sys.executable)


def train_launcher(wc):
    """The command that starts `ddm` (one process, torchrun on one node, srun + torchrun)."""
    k, n = train_geometry(wc)
    if k * n == 1:
        return DDM
    run = f"{_python()} -m torch.distributed.run --nnodes={n} --nproc_per_node={k} --max-restarts=0"
    if n == 1:
        return f"{run} --standalone -m ddm"
    return (
        'test -n "$SLURM_JOB_ID" || { echo "train.nodes: ' + str(n) + ' needs a SLURM allocation '
        '(snakemake --profile slurm); set train.nodes: 1 to train on this machine" >&2; exit 2; }; '
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
        f"srun --nodes={n} --ntasks-per-node=1 --kill-on-bad-exit=1 {run} "
        '--rdzv_backend=c10d --rdzv_endpoint="$head:$((29500 + SLURM_JOB_ID % 1000))" '
        '--rdzv_id="$SLURM_JOB_ID" -m ddm'
    )


def train_threads_per_process(wc, threads):
    """CPU threads of each training process: the job's threads shared by its K processes."""
    return max(1, threads // train_geometry(wc)[0])


rule train:
    input:
        "data/prepared/{dataset}.pt",
    output:
        model="results/models/{dataset}/{method}.pt",
        curve="results/curves/{dataset}/{method}.csv",
    params:
        ddm=train_launcher,
        cfg=training_config,
        proc_threads=train_threads_per_process,
    log:
        "logs/train/{dataset}/{method}.log",
    threads: 1
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
