# Conditioned generation (Tables 2 and 3 of the paper, §5.3): with `conditioned: true` in params.yaml,
# per task of the preset's conditioned block (conditioned_presets; docs/conditioned.md):
#   prepare_task   data/prepared/tasks/{task}/{train,test}.pt      (phase download; ddm.tasks stand-ins)
#   train_task     results/models/tasks/{task}/{method}.pt         (phase train; CondUNet, one per method)
#   sample_task    results/samples/tasks/{task}/{method}/nfe{N}-r{R}.pt, every (NFE, repeat) set of the
#                  tables in one job (phase sample; one sample per test condition, the same seeds and
#                  conditions for every method)
#   evaluate_task  results/metrics/tasks/{task}/{method}/nfe{N}-r{R}.json for every method and set, and
#                  results/metrics/tasks/{task}/reference.json (the trivial references) (phase evaluate)
#   task_figure    reports/figures/tasks_{task}.png (phase tables)
# The stats rule adds the metric files to reports/metrics.json, the report rule Tables 2 and 3 to
# reports/tables.tex. One job per (task, method) samples every set and one job per task scores
# every sample file: each job costs seconds of Python and torch start-up, which would dominate the
# embedded run with a job per sample set (9 sets x 2 methods x 3 tasks).


def task_training_config(wc):
    """What training reads of the (task, method)'s resolved config, as JSON (a change retrains)."""
    cfg = task_config(wc.task, wc.method)
    return json.dumps({k: v for k, v in cfg.items() if k != "sampling"}, sort_keys=True)


def task_sampling_config(wc):
    return json.dumps(task_config(wc.task, wc.method)["sampling"], sort_keys=True)


def task_sets_arg():
    return " ".join(f"{n}:{r}" for n, r in TASK_SETS)


def evaluate_task_inputs(wc):
    """The test split, every sample file of the task, and for inpainting (FID) the digits' FID files."""
    inputs = {"data": f"data/prepared/tasks/{wc.task}/test.pt",
              "samples": [f for m in TASK_METHODS for f in task_set_files(f"results/samples/tasks/{wc.task}/{m}", "pt")]}
    if TASKS[wc.task]["metric"] == "fid":
        inputs.update(reference="results/fid/digits/reference.npz", extractor="results/fid/digits/extractor.json")
    return inputs


def figure_samples(wc):
    """Sample set 0 of every (method, NFE of Table 2), in the order of params.yaml."""
    return [f"results/samples/tasks/{wc.task}/{m}/nfe{n}-r0.pt" for m in TASK_METHODS for n in _COND["table2"]["nfe"]]


def figure_labels(wc):
    labels = [f"{(config['conditioned_methods'][m].get('label') or m.upper())}, {n} NFE"
              for m in TASK_METHODS for n in _COND["table2"]["nfe"]]
    return " ".join(shlex.quote(x) for x in labels)


rule prepare_task:
    output:
        train="data/prepared/tasks/{task}/train.pt",
        test="data/prepared/tasks/{task}/test.pt",
    params:
        ddm=DDM,
        data=lambda wc: json.dumps(task_config(wc.task)["data"], sort_keys=True),
    log:
        "logs/tasks/prepare/{task}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} prepare-task --task {wildcards.task} --train {output.train} --test {output.test} > {log} 2>&1"


rule train_task:
    input:
        "data/prepared/tasks/{task}/train.pt",
    output:
        model="results/models/tasks/{task}/{method}.pt",
        curve="results/curves/tasks/{task}/{method}.csv",
    params:
        ddm=DDM,
        cfg=task_training_config,
    log:
        "logs/tasks/train/{task}/{method}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} train-task --task {wildcards.task} --method {wildcards.method} "
        "--data {input} --checkpoints results/checkpoints/tasks/{wildcards.task} --out {output.model} "
        "--curve {output.curve} > {log} 2>&1"


rule sample_task:
    input:
        model="results/models/tasks/{task}/{method}.pt",
        data="data/prepared/tasks/{task}/test.pt",
    output:
        task_set_files("results/samples/tasks/{task}/{method}", "pt"),
    params:
        ddm=DDM,
        cfg=task_sampling_config,
        sets=task_sets_arg(),
    log:
        "logs/tasks/sample/{task}/{method}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} sample-task --task {wildcards.task} --method {wildcards.method} "
        "--model {input.model} --data {input.data} --sets {params.sets} "
        "--out-dir results/samples/tasks/{wildcards.task}/{wildcards.method} > {log} 2>&1"


rule evaluate_task:
    input:
        unpack(evaluate_task_inputs),
    output:
        # every conditioned method's files: the same list for every task (placeholders when off)
        task_metric_outputs("{task}"),
    params:
        ddm=DDM,
        sets=task_sets_arg(),
        methods=" ".join(TASK_METHODS),
        fid=lambda wc, input: f"--reference {input.reference} --extractor {input.extractor}" if "reference" in input.keys() else "",
    log:
        "logs/tasks/evaluate/{task}.log",
    threads: 1
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} evaluate-task --task {wildcards.task} --data {input.data} "
        "--samples-dir results/samples/tasks/{wildcards.task} --methods {params.methods} --sets {params.sets} "
        "{params.fid} --out-dir results/metrics/tasks/{wildcards.task} > {log} 2>&1"


rule task_figure:
    input:
        data="data/prepared/tasks/{task}/test.pt",
        samples=figure_samples,
    output:
        report("reports/figures/tasks_{task}.png", caption="../report/task_figure.rst", category="Figures",
               subcategory="Conditioned generation", labels={"task": "{task}"}),
    params:
        ddm=DDM,
        labels=figure_labels,
    log:
        "logs/figures/tasks_{task}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} task-figure --task {wildcards.task} --data {input.data} --samples {input.samples} "
        "--labels {params.labels} --out {output} > {log} 2>&1"
