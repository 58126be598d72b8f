# The functions that only the rules of workflow/rules/data.smk use (the download and reference
# phases: what prepare reads of an image folder). data.smk includes this file before its rules: a
# rule file holds rules only (`snakemake --lint`). Functions of several rule files, and the names
# they share (config, PRESET, DATASETS, ...), are in workflow/rules/common.smk.


def source_images(wc):
    """What prepare reads of an `imagefolder` dataset's `source` folder, as a param: the digest of
    its image files (relative path, size, mtime; ddm.datasets.image_folder_digest), so an added,
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
    from ddm.datasets import image_folder_digest  # imports torch: only when an image folder is used

    return image_folder_digest(source)
