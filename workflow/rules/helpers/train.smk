# The functions that only the rules of workflow/rules/train.smk use (the train phase: what training
# reads of the resolved config; the launch geometry: one process, torchrun on one node, or srun +
# torchrun). train.smk includes this file before its rules: a rule file holds rules only
# (`snakemake --lint`). Functions of several rule files, and the names they share (config, PRESET,
# DATASETS, ...), are in workflow/rules/common.smk.


def training_config(wc):
    """What training reads of the job's resolved config, as JSON: a Snakemake param, so a change
    reruns the training (sampling-only keys are the sample rule's param instead)."""
    cfg = resolve(config, wc.dataset, wc.method)
    return json.dumps({k: v for k, v in cfg.items() if k != "sampling"}, sort_keys=True)


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
        f'test -n "$SLURM_JOB_ID" || {{ echo "train.nodes: {n} needs a SLURM allocation '
        '(snakemake --profile slurm); set train.nodes: 1 to train on this machine" >&2; exit 2; }; '
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
        f"srun --nodes={n} --ntasks-per-node=1 --kill-on-bad-exit=1 {run} "
        '--rdzv_backend=c10d --rdzv_endpoint="$head:$((29500 + SLURM_JOB_ID % 1000))" '
        '--rdzv_id="$SLURM_JOB_ID" -m ddm'
    )


def train_threads_per_process(wc, threads):
    """CPU threads of each training process: the job's threads shared by its K processes."""
    return max(1, threads // train_geometry(wc)[0])
