# The functions that only the rules of workflow/rules/sample.smk use (the sample and evaluate
# phases: a job's sampling config, model file, set size and shards). sample.smk includes this file
# before its rules: a rule file holds rules only (`snakemake --lint`). Functions of several rule
# files, and the names they share (config, PRESET, DATASETS, ...), are in workflow/rules/common.smk.


def sampling_config(wc):
    return json.dumps(resolve(config, wc.dataset, wc.method)["sampling"], sort_keys=True)


def model_file(wc):
    return f"results/models/{wc.dataset}/{model_of(config, wc.method)}.pt"


def sample_inputs(wc):
    """The trained model; with `denoiser: posterior_mean` (the sampler ceiling) also the training
    images the exact posterior mean is computed from."""
    inputs = {"model": model_file(wc)}
    if resolve(config, wc.dataset, wc.method)["sampling"]["denoiser"] == "posterior_mean":
        inputs["data"] = f"data/prepared/{wc.dataset}.pt"
    return inputs


def num_samples(wc):
    return set_size(wc.dataset, wc.nfe)


def shard_size(wc):
    """Samples per shard of the job's set (the preset's shard_size; ddm.shards)."""
    return set_shard_size(PRESET[wc.dataset], set_size(wc.dataset, wc.nfe))


def set_files(wc):
    """The sample set files of the job's (dataset, method, nfe, repeat) wildcards."""
    return sample_set_files(wc.dataset, wc.method, wc.nfe, wc.repeat)
