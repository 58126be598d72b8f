# Phase "train": one model per (dataset, method). Checkpoints live in results/checkpoints/,
# outside the rule's output, keyed by the hash of the resolved config: a preempted or failed
# job resumes where it stopped (the profile's `retries`), a changed config starts afresh.


rule train:
    input:
        "data/prepared/{dataset}.pt",
    output:
        model="results/models/{dataset}/{method}.pt",
        curve="results/curves/{dataset}/{method}.csv",
    params:
        ddm=DDM,
        cfg=training_config,
    log:
        "logs/train/{dataset}/{method}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} train --dataset {wildcards.dataset} --method {wildcards.method} "
        "--data {input} --checkpoints results/checkpoints/{wildcards.dataset} --out {output.model} --curve {output.curve} "
        "> {log} 2>&1"


rule phase_train:
    input:
        phase_outputs("train"),
