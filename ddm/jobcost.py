"""The work of one Snakemake job of the pipeline, per rule (``ddm.plan``): FLOPs and their kind,
start-up kind, memory and disk, from the resolved config and the job's wildcards and shell
command. A rule not listed costs its start-up only (figures, tables, report)."""

from __future__ import annotations

import re

from ddm import netcost
from ddm.fidstats import CHUNK_BYTES
from ddm.gpucards import train_precision
from ddm.config import conditioned_block, inpainting_dataset, resolve, resolve_task, task_sampling_batch, task_sets

GB = 1e9
RUNTIME_GB = 1.0  # Python + torch in memory
FEATURES = 2048   # Inception-v3's pool features (the digits classifier's are fewer)
METRIC_BATCH = 500  # images per feature-extraction batch (ddm.metrics)


def train_gpu_gb(net, batch_per_gpu: float) -> float:
    """GPU memory of a training step: weights, gradients, EMA and AdamW's two moments in fp32 (20
    bytes a parameter) and the activations autograd keeps for the backward pass of the batch (fp32:
    an upper bound under bf16 autocast, which keeps some of them in bf16)."""
    return (20 * net.params + batch_per_gpu * net.saved_bytes) / GB


def micro_batch(train, gpus: int = 1) -> float:
    """The images of one forward and backward pass on one GPU: a training block's batch_size over
    its GPUs and its gradient-accumulation steps (``accum``; ddm.training: the same update, in
    smaller passes)."""
    return train["batch_size"] / (gpus * train.get("accum", 1))


def train_host_gb(images: int, pixels: int, params: int, procs: int) -> float:
    """Host memory of a training on one node: per process the runtime, the data set as uint8
    (converted to floats a batch at a time) and a host copy of the state for checkpoints (16 bytes a
    parameter: weights, EMA, AdamW's moments)."""
    return procs * (RUNTIME_GB + (images * pixels + 16 * params) / GB)


def streamed_fid_gb(images_in_memory: int, pixels: int) -> float:
    """Host memory of a streamed FID (ddm.fidstats): one shard or chunk of uint8 images and its
    float64 features, plus the running sums (mean and outer products, float64)."""
    return RUNTIME_GB + (images_in_memory * (pixels + 8 * FEATURES) + 2 * 8 * FEATURES ** 2) / GB


def inference_gb(net, batch: int) -> float:
    """GPU memory of a forward pass without gradients: the weights and a few of the largest
    intermediate tensors (a skip connection, its block's input and output) per image."""
    return (4 * net.params + 4 * batch * net.peak_bytes) / GB


def _num(shell: str, flag: str) -> int | None:
    m = re.search(rf"{flag}[ =](\d+)", shell)
    return int(m.group(1)) if m else None


def _pixels(cfg) -> int:
    return cfg["channels"] * cfg["resolution"] ** 2


def _data_count(params, dataset) -> int:
    """Images of a prepared data set: the embedded digits' 1,797 (1,347 train); the paper's sets."""
    return {"digits": 1797, "cifar10": 50000, "celebahq256": 30000}.get(dataset, 50000)


def train(p, wc, shell):
    cfg = resolve(p, wc["dataset"], wc["method"])
    net, t = netcost.unet_cost(cfg), cfg["train"]
    per_node = int(t.get("gpus", 1))
    gpus = per_node * int(t.get("nodes", 1))
    state = 16 * net.params  # weights, EMA, AdamW's two moments (fp32)
    ckpts = t.get("keep_last", 1) * state + (t["steps"] // t["ckpt_every"]) * 4 * net.params * bool(cfg.get("snapshots"))
    return dict(flops=3 * net.flops * t["batch_size"] * t["steps"], work="train", startup="torch", gpus=gpus,
                precision=train_precision(t), mem_gb=train_host_gb(_data_count(p, wc["dataset"]), _pixels(cfg),
                                                                   net.params, per_node),
                gpu_mem_gb=train_gpu_gb(net, micro_batch(t, gpus)), disk_gb=(ckpts + 8 * net.params) / GB)


def sample(p, wc, shell):
    cfg = resolve(p, wc["dataset"], wc["method"])
    n = _num(shell, "--num-samples") or cfg["fid"]["num_samples"]
    shard = _num(shell, "--shard-size")
    n = min(n, shard) if shard else n
    nfe, batch = int(wc["nfe"]), _num(shell, "--batch-size") or 500
    if cfg["sampling"].get("denoiser") == "posterior_mean":  # distances to every training image
        flops = 4.0 * _data_count(p, wc["dataset"]) * _pixels(cfg) * n * nfe
        net = netcost.NetCost(0, 0, 0)
    else:
        net = netcost.unet_cost(cfg)
        flops = net.flops * n * nfe
    return dict(flops=flops, work="sample", startup="torch",
                mem_gb=RUNTIME_GB + (n * _pixels(cfg) * 5 + 4 * net.params) / GB,
                gpu_mem_gb=inference_gb(net, min(n, batch)), disk_gb=n * _pixels(cfg) / GB)


def _fid_work(extractor: str, n: int) -> tuple[float, str]:
    kind = "features" if extractor == "digits-classifier" else "features_inception"
    return netcost.extractor_cost(extractor).flops * n, kind


def evaluate(p, wc, shell):
    cfg = resolve(p, wc["dataset"], wc["method"])
    block = p["presets"][p["preset"]][wc["dataset"]]
    nfe = int(wc["nfe"])
    n = block["num_samples_long"] if nfe in block["nfe_long"] and nfe not in block["nfe"] else block["fid"]["num_samples"]
    flops, kind = _fid_work(block["fid"]["extractor"], n)
    held = min(n, block.get("shard_size") or n)  # ddm evaluate reads a sharded set one shard at a time
    return dict(flops=flops, work=kind, startup="fid", mem_gb=streamed_fid_gb(held, _pixels(cfg)),
                gpu_mem_gb=_extractor_gpu_gb(block["fid"]["extractor"]), disk_gb=0.0)


def _extractor_gpu_gb(extractor: str) -> float:
    return inference_gb(netcost.extractor_cost(extractor), METRIC_BATCH)


def refstats(p, wc, shell):
    block = p["presets"][p["preset"]][wc["dataset"]]
    n = _data_count(p, wc["dataset"])
    flops, kind = _fid_work(block["fid"]["extractor"], n)
    cfg = resolve(p, wc["dataset"], "ddm")
    held = min(n, max(1, CHUNK_BYTES // _pixels(cfg)))  # a data set above CHUNK_BYTES is streamed in chunks
    return dict(flops=flops, work=kind, startup="fid", mem_gb=streamed_fid_gb(held, _pixels(cfg)),
                gpu_mem_gb=_extractor_gpu_gb(block["fid"]["extractor"]))


def prepare(p, wc, shell):
    cfg = resolve(p, wc["dataset"], "ddm")
    size = _data_count(p, wc["dataset"]) * _pixels(cfg)
    return dict(seconds=2e-8 * size, startup="torch", mem_gb=RUNTIME_GB + 2 * size / GB, disk_gb=size / GB, gpus=0)


def extractor(p, wc, shell):
    return dict(seconds=5.0 if p["presets"][p["preset"]][wc["dataset"]]["fid"]["extractor"] == "digits-classifier" else 0.0,
                startup="fid", gpus=0)


def convergence(p, wc, shell):
    cfg = resolve(p, wc["dataset"], wc["method"])
    conv, t = p["presets"][p["preset"]][wc["dataset"]]["convergence"], cfg["train"]
    snaps = max(1, t["steps"] // t["ckpt_every"])
    n, nfes = conv["num_samples"], conv["nfe"]
    flops = netcost.unet_cost(cfg).flops * n * sum(nfes) * snaps
    fid, _ = _fid_work(p["presets"][p["preset"]][wc["dataset"]]["fid"]["extractor"], n * len(nfes) * snaps)
    return dict(flops=flops + fid, work="sample", startup="fid", gpus=0)


def fig3(p, wc, shell):
    from ddm.roles import fig3_methods

    models = fig3_methods(p)
    cfg = resolve(p, wc["dataset"], models[0])
    nfe = max(p["presets"][p["preset"]][wc["dataset"]]["ablation_nfe"])
    return dict(flops=netcost.unet_cost(cfg).flops * 64 * nfe * len(models), work="sample", startup="torch", gpus=0)


RULES = {"train": train, "sample": sample, "sample_shard": sample, "evaluate": evaluate, "refstats": refstats, "prepare": prepare,
         "extractor": extractor, "convergence": convergence, "fig3": fig3}


# -- conditioned tasks (workflow/rules/tasks.smk) --------------------------------------------------
#: (train, test) sizes of a task whose n_train / n_test is null: every image of the split
SPLITS = {"div2k": (800, 100), "duts": (10553, 5019), "celebahq256": (26000, 2000), None: (1347, 450)}


def _split_sizes(cfg) -> tuple[int, int]:
    d = cfg["data"]
    full = SPLITS.get(d.get("dataset"), SPLITS[None])
    return d.get("n_train") or full[0], d.get("n_test") or full[1]


def _task_cfg(p, wc):
    method = wc.get("method") or next(iter(p["conditioned_methods"]))
    return resolve_task(p, wc["task"], method)


def prepare_task(p, wc, shell):
    cfg = _task_cfg(p, wc)
    size = sum(_split_sizes(cfg)) * (cfg["channels"] + cfg["cond_channels"]) * cfg.get("cond_resolution", cfg["resolution"]) ** 2
    return dict(seconds=2e-8 * size, startup="torch", mem_gb=RUNTIME_GB + 2 * size / GB, disk_gb=size / GB, gpus=0)


def train_autoencoder(p, wc, shell):
    cfg = _task_cfg(p, wc)
    lat, size = cfg["latent"], cfg["cond_resolution"]
    ae = netcost.autoencoder_cost(lat, cfg["channels"], size)
    state = 16 * ae.params
    return dict(flops=3 * ae.flops * lat["batch_size"] * lat["steps"], work="train", startup="torch",
                precision=train_precision(lat), mem_gb=train_host_gb(_split_sizes(cfg)[0], cfg["channels"] * size ** 2,
                                                                     ae.params, 1),
                gpu_mem_gb=train_gpu_gb(ae, micro_batch(lat)), disk_gb=3 * state / GB)


def train_task(p, wc, shell):
    cfg = _task_cfg(p, wc)
    net, t = netcost.task_net_cost(cfg), cfg["train"]
    state = 16 * net.params
    n_train = _split_sizes(cfg)[0]
    pixels = cfg["channels"] * cfg["resolution"] ** 2 + cfg["cond_channels"] * cfg.get("cond_resolution", cfg["resolution"]) ** 2
    return dict(flops=3 * net.flops * t["batch_size"] * t["steps"], work="train", startup="torch",
                precision=train_precision(t), mem_gb=train_host_gb(n_train, pixels, net.params, 1),
                gpu_mem_gb=train_gpu_gb(net, micro_batch(t)),
                disk_gb=(t.get("keep_last", 1) * state + 8 * net.params) / GB)


def sample_task(p, wc, shell):
    cfg = _task_cfg(p, wc)
    net, n = netcost.task_net_cost(cfg), _split_sizes(cfg)[1]
    sets = task_sets(conditioned_block(p))
    flops = net.flops * n * sum(nfe for nfe, _ in sets)
    if "latent" in cfg:  # each sample decoded once (the decoder: about half the autoencoder)
        flops += 0.5 * netcost.autoencoder_cost(cfg["latent"], cfg["channels"], cfg["cond_resolution"]).flops * n * len(sets)
    out = n * cfg["channels"] * cfg.get("cond_resolution", cfg["resolution"]) ** 2
    return dict(flops=flops, work="sample", startup="torch", mem_gb=RUNTIME_GB + 4 * (out + net.params) / GB,
                gpu_mem_gb=inference_gb(net, min(n, _num(shell, "--batch-size") or task_sampling_batch(p))),
                disk_gb=out * len(sets) / GB)


def evaluate_task(p, wc, shell):
    cfg = _task_cfg(p, wc)
    n, sets = _split_sizes(cfg)[1], task_sets(conditioned_block(p))
    if cfg["metric"] != "fid":
        return dict(seconds=1e-7 * n * len(sets) * len(p["conditioned_methods"]) * _pixels(cfg), startup="fid", gpus=0)
    ds = inpainting_dataset(conditioned_block(p)["tasks"][wc["task"]])
    extractor = p["presets"][p["preset"]][ds]["fid"]["extractor"]
    flops, kind = _fid_work(extractor, n * (len(sets) * len(p["conditioned_methods"]) + 3))
    return dict(flops=flops, work=kind, startup="fid", mem_gb=RUNTIME_GB + n * len(sets) * _pixels(cfg) / GB,
                gpu_mem_gb=_extractor_gpu_gb(extractor))


RULES.update(prepare_task=prepare_task, train_autoencoder=train_autoencoder, train_task=train_task,
             sample_task=sample_task, evaluate_task=evaluate_task)
