# Conditioned generation (Tables 2 and 3 of the paper, §5.3): with `conditioned: true` in params.yaml,
# per task of the preset's conditioned block (conditioned_presets; docs/conditioned.md):
#   prepare_task   data/prepared/tasks/{task}/{train,test}.pt      (phase download; ddm.tasks stand-ins, or
#                  the task's `dataset:` fetched into data/raw as rule prepare does)
#   train_autoencoder results/models/autoencoder/{task}.pt and .json (phase train; only a task with a
#                  `latent` block: its KL autoencoder, §5.1, and its test-split reconstruction PSNR,
#                  which the stats rule carries into reports/metrics.json and Table 2's caption)
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
# embedded run with a job per sample set (9 sets x 2 methods x 3 tasks). The functions only these
# rules use are in helpers/tasks.smk (a rule file holds rules only: `snakemake --lint`), the shared
# ones in common.smk.

include: "helpers/tasks.smk"  # the functions only these rules use


rule prepare_task:
    output:
        train="data/prepared/tasks/{task}/train.pt",
        test="data/prepared/tasks/{task}/test.pt",
    params:
        ddm=DDM,
        code=code_of("prepare_task"),
        data=lambda wc: json.dumps(task_config(wc.task)["data"], sort_keys=True),
    log:
        "logs/tasks/prepare/{task}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} prepare-task --task {wildcards.task} --data-root data/raw --train {output.train} "
        "--test {output.test} > {log} 2>&1"


# results/models/autoencoder/{task}.pt would also match rule train's results/models/{dataset}/{method}.pt
ruleorder: train_autoencoder > train


rule train_autoencoder:
    input:
        train="data/prepared/tasks/{task}/train.pt",
        test="data/prepared/tasks/{task}/test.pt",
    output:
        model="results/models/autoencoder/{task}.pt",
        psnr="results/models/autoencoder/{task}.json",
    params:
        ddm=DDM,
        code=code_of("train_autoencoder"),
        latent=lambda wc: json.dumps(task_config(wc.task)["latent"], sort_keys=True),
    log:
        "logs/tasks/autoencoder/{task}.log",
    threads: 1
    priority: 10  # the longest jobs first: the rest fills the other cores around them
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} train-autoencoder --task {wildcards.task} --data {input.train} "
        "--test {input.test} --checkpoints results/checkpoints/autoencoder --out {output.model} "
        "--metrics {output.psnr} > {log} 2>&1"


rule train_task:
    input:
        data="data/prepared/tasks/{task}/train.pt",
        autoencoder=task_autoencoder,
    output:
        model="results/models/tasks/{task}/{method}.pt",
        curve="results/curves/tasks/{task}/{method}.csv",
    params:
        ddm=DDM,
        code=code_of("train_task"),
        cfg=task_training_config,
        autoencoder=task_autoencoder_arg,
    log:
        "logs/tasks/train/{task}/{method}.log",
    threads: 1
    priority: 10  # the longest jobs first: the rest fills the other cores around them
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} train-task --task {wildcards.task} --method {wildcards.method} "
        "--data {input.data} {params.autoencoder} --checkpoints results/checkpoints/tasks/{wildcards.task} "
        "--out {output.model} --curve {output.curve} > {log} 2>&1"


rule sample_task:
    input:
        model="results/models/tasks/{task}/{method}.pt",
        data="data/prepared/tasks/{task}/test.pt",
        autoencoder=task_autoencoder,
    output:
        task_set_files("results/samples/tasks/{task}/{method}", "pt"),
    params:
        ddm=DDM,
        code=code_of("sample_task"),
        cfg=task_sampling_config,
        sets=task_sets_arg(),
        autoencoder=task_autoencoder_arg,
    log:
        "logs/tasks/sample/{task}/{method}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} sample-task --task {wildcards.task} --method {wildcards.method} "
        "--model {input.model} --data {input.data} {params.autoencoder} --sets {params.sets} "
        "--out-dir results/samples/tasks/{wildcards.task}/{wildcards.method} "
        "--resume-dir results/checkpoints/task_sets/{wildcards.task}/{wildcards.method} > {log} 2>&1"


rule evaluate_task:
    input:
        unpack(evaluate_task_inputs),
    output:
        # every conditioned method's files: the same list for every task (placeholders when off)
        task_metric_outputs("{task}"),
    params:
        ddm=DDM,
        code=code_of("evaluate_task"),
        sets=task_sets_arg(),
        methods=" ".join(TASK_METHODS),
        fid=lambda wc, input: f"--reference {input.reference} --extractor {input.extractor}" if "reference" in input.keys() else "",
        metrics=lambda wc: " ".join(task_config(wc.task)["metrics"]),  # the extra ones (ddm.task_metrics): a rerun trigger
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
        code=code_of("task_figure"),
        labels=figure_labels,
    log:
        "logs/figures/tasks_{task}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} task-figure --task {wildcards.task} --data {input.data} --samples {input.samples} "
        "--labels {params.labels} --out {output} > {log} 2>&1"
