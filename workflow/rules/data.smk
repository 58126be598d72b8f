# Phase "download" and phase "reference": dataset -> uint8 tensor file; FID extractor and
# reference statistics (computed once per dataset, extractor and weights).

include: "helpers/data.smk"  # the functions only these rules use


rule prepare:
    output:
        "data/prepared/{dataset}.pt",
    params:
        ddm=DDM,
        code=code_of("prepare"),
        block=lambda wc: json.dumps({k: PRESET[wc.dataset].get(k) for k in ("resolution", "source")}, sort_keys=True),
        images=source_images,
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} prepare --dataset {wildcards.dataset} --data-root data/raw --out {output} > {log} 2>&1"


rule extractor:
    output:
        "results/fid/{dataset}/extractor.json",
    params:
        ddm=DDM,
        code=code_of("extractor"),
        fid=lambda wc: json.dumps({k: PRESET[wc.dataset]["fid"].get(k) for k in ("extractor", "weights")}, sort_keys=True),
        seed=config["seed"],
    log:
        "logs/extractor/{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} extractor --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule refstats:
    input:
        data="data/prepared/{dataset}.pt",
        extractor="results/fid/{dataset}/extractor.json",
    output:
        "results/fid/{dataset}/reference.npz",
    params:
        ddm=DDM,
        code=code_of("refstats"),
    log:
        "logs/refstats/{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} refstats --data {input.data} --extractor {input.extractor} --out {output} > {log} 2>&1"


rule phase_download:
    input:
        phase_outputs("download"),
        verified_before_run("download"),  # its products verified first (common.smk)


rule phase_reference:
    input:
        phase_outputs("reference"),
        verified_before_run("reference"),  # its products verified first (common.smk)
