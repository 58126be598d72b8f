# The functions that only the rules of workflow/rules/tasks.smk use (conditioned generation, Tables
# 2 and 3: a (task, method)'s configs, its autoencoder, the sample sets and the figure). tasks.smk
# includes this file before its rules: a rule file holds rules only (`snakemake --lint`). Functions
# of several rule files, and the names they share (config, PRESET, DATASETS, ...), are in
# workflow/rules/common.smk.

from ddm.config import inpainting_dataset


def task_training_config(wc):
    """What training reads of the (task, method)'s resolved config, as JSON (a change retrains)."""
    cfg = task_config(wc.task, wc.method)
    return json.dumps({k: v for k, v in cfg.items() if k != "sampling"}, sort_keys=True)


def task_sampling_config(wc):
    return json.dumps(task_config(wc.task, wc.method)["sampling"], sort_keys=True)


def task_sets_arg():
    return " ".join(f"{n}:{r}" for n, r in TASK_SETS)


def task_autoencoder(wc):
    """The autoencoder model a (latent) task's training and sampling read (a new one reruns them)."""
    return autoencoder_files(wc.task)[:1]


def task_autoencoder_arg(wc, input):
    return f"--autoencoder {input.autoencoder}" if input.autoencoder else ""


def evaluate_task_inputs(wc):
    """The test split, every sample file of the task, and for inpainting (FID) its data set's FID files."""
    inputs = {"data": f"data/prepared/tasks/{wc.task}/test.pt",
              "samples": [f for m in TASK_METHODS for f in task_set_files(f"results/samples/tasks/{wc.task}/{m}", "pt")]}
    if TASKS[wc.task]["metric"] == "fid":
        ds = inpainting_dataset(_COND["tasks"][wc.task])
        inputs.update(reference=f"results/fid/{ds}/reference.npz", extractor=f"results/fid/{ds}/extractor.json")
    return inputs


def figure_samples(wc):
    """Sample set 0 of every (method, NFE of Table 2), in the order of params.yaml."""
    return [f"results/samples/tasks/{wc.task}/{m}/nfe{n}-r0.pt" for m in TASK_METHODS for n in _COND["table2"]["nfe"]]


def figure_labels(wc):
    labels = [f"{(config['conditioned_methods'][m].get('label') or m.upper())}, {n} NFE"
              for m in TASK_METHODS for n in _COND["table2"]["nfe"]]
    return " ".join(shlex.quote(x) for x in labels)
