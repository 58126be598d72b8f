# Phase "sample" and phase "evaluate": one sample set per (dataset, method, NFE, repeat), its FID.
# A set is one job (`sample`: nfe{N}-r{R}.pt), or with the preset's shard_size one job per shard
# (`sample_shard`: nfe{N}-r{R}/shard{k}.pt; ddm/shards.py); `evaluate` streams the shards.

include: "helpers/sample.smk"  # the functions only these rules use


rule sample:
    input:
        unpack(sample_inputs),
    output:
        "results/samples/{dataset}/{method}/nfe{nfe}-r{repeat}.pt",
    params:
        ddm=DDM,
        code=code_of("sample"),
        cfg=sampling_config,
        num_samples=num_samples,
        data=lambda wc, input: f"--data {input.data}" if "data" in input.keys() else "",
    log:
        "logs/sample/{dataset}/{method}/nfe{nfe}-r{repeat}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} sample --dataset {wildcards.dataset} --method {wildcards.method} "
        "--model {input.model} --nfe {wildcards.nfe} --repeat {wildcards.repeat} "
        "--num-samples {params.num_samples} {params.data} --out {output} > {log} 2>&1"


rule sample_shard:
    input:
        unpack(sample_inputs),
    output:
        "results/samples/{dataset}/{method}/nfe{nfe}-r{repeat}/shard{shard}.pt",
    params:
        ddm=DDM,
        code=code_of("sample_shard"),
        cfg=sampling_config,
        num_samples=num_samples,
        shard_size=shard_size,
        data=lambda wc, input: f"--data {input.data}" if "data" in input.keys() else "",
    log:
        "logs/sample/{dataset}/{method}/nfe{nfe}-r{repeat}/shard{shard}.log",
    threads: 1
    resources:
        gpus=1,
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} sample --dataset {wildcards.dataset} --method {wildcards.method} "
        "--model {input.model} --nfe {wildcards.nfe} --repeat {wildcards.repeat} "
        "--num-samples {params.num_samples} --shard {wildcards.shard} --shard-size {params.shard_size} "
        "{params.data} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        samples=set_files,  # the set's file, or its shards in order (read one at a time)
        reference="results/fid/{dataset}/reference.npz",
        extractor="results/fid/{dataset}/extractor.json",
    output:
        "results/metrics/{dataset}/{method}/nfe{nfe}-r{repeat}.json",
    params:
        ddm=DDM,
        code=code_of("evaluate"),
    log:
        "logs/evaluate/{dataset}/{method}/nfe{nfe}-r{repeat}.log",
    threads: 1
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} evaluate --samples {input.samples} --reference {input.reference} "
        "--extractor {input.extractor} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--nfe {wildcards.nfe} --repeat {wildcards.repeat} --out {output} > {log} 2>&1"


rule fig3:
    input:
        expand("results/models/{{dataset}}/{method}.pt", method=FIG3),  # role: fig3 (ddm.roles.fig3_methods)
    output:
        "results/metrics/{dataset}/fig3.json",
    params:
        ddm=DDM,
        code=code_of("fig3"),
        nfe=lambda wc: max(PRESET[wc.dataset]["ablation_nfe"]),
    log:
        "logs/fig3/{dataset}.log",
    threads: 1
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} fig3 --models {input} --nfe {params.nfe} --out {output} > {log} 2>&1"


rule convergence:
    input:
        model=model_file,  # a twin's record reads its owner's network (ddm.config.training_twins)
        reference="results/fid/{dataset}/reference.npz",
        extractor="results/fid/{dataset}/extractor.json",
    output:
        "results/convergence/{dataset}/{method}.json",
    params:
        ddm=DDM,
        code=code_of("convergence"),
        nfe=lambda wc: " ".join(map(str, PRESET[wc.dataset]["convergence"]["nfe"])),
        num_samples=lambda wc: PRESET[wc.dataset]["convergence"]["num_samples"],
        cfg=sampling_config,  # the method's sampler, as in its Table 1 cells
    log:
        "logs/convergence/{dataset}/{method}.log",
    threads: 1
    conda:
        "../envs/ddm.yaml"
    shell:
        "DDM_THREADS={threads} {params.ddm} convergence --dataset {wildcards.dataset} --method {wildcards.method} "
        "--model {input.model} --reference {input.reference} --extractor {input.extractor} --nfe {params.nfe} "
        "--num-samples {params.num_samples} --out {output} > {log} 2>&1"


rule phase_sample:
    input:
        phase_outputs("sample"),
        verified_before_run("sample"),  # its products verified first (common.smk)


rule phase_evaluate:
    input:
        phase_outputs("evaluate"),
        verified_before_run("evaluate"),  # its products verified first (common.smk)
