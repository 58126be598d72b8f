# Phase "download" and phase "reference": dataset -> uint8 tensor file; FID extractor and
# reference statistics (computed once per dataset, extractor and weights).

import os


def source_images(wc):
    """What prepare reads of an `imagefolder` dataset's `source` folder, as a param: the digest of
    its image files (relative path, size, mtime; ddm.data.image_folder_digest), so an added,
    removed or changed image reruns prepare and everything downstream. Other datasets: "".
    A source that is not a folder: "" when nothing was prepared yet (the prepare job then fails
    with the loader's message); else an error before any job runs, so that a folder that is
    only missing for now (an unmounted disk) does not delete the prepared images."""
    source = PRESET[wc.dataset].get("source")
    if wc.dataset != "imagefolder" or not source:
        return ""
    if not os.path.isdir(os.path.expanduser(source)):
        prepared = f"data/prepared/{wc.dataset}.pt"
        if not os.path.exists(prepared):
            return ""
        raise WorkflowError(f"presets.{config['preset']}.{wc.dataset}.source: image folder not found: {source}; "
                            f"restore it or set source to a folder of PNG/JPEG images ({prepared} is kept)")
    from ddm.data import image_folder_digest  # imports torch: only when an image folder is used

    return image_folder_digest(source)


rule prepare:
    output:
        "data/prepared/{dataset}.pt",
    params:
        ddm=DDM,
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
    log:
        "logs/refstats/{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} refstats --data {input.data} --extractor {input.extractor} --out {output} > {log} 2>&1"


rule phase_download:
    input:
        phase_outputs("download"),


rule phase_reference:
    input:
        phase_outputs("reference"),
