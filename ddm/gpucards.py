"""The GPU side of the plan (``python -m ddm.plan``): a named card's throughput in a job's
precision, and whether each job fits the card's memory and the SLURM profile's ``mem_mb``.

Throughput (ddm/data/throughput.yaml): the card's dense peak in the precision (``cards:``, the
vendors' data sheets) times the efficiency stated for that precision, unless
benchmarks/gpu_check.sh measured that card (``measured:``), whose figures then replace the
estimate kind by kind, and the ``source`` line says which. Precision of a training: its
``train.precision`` (bf16), else ``train.tf32`` (tf32), else fp32; sampling and FID run in fp32
with PyTorch's default cuDNN TF32 convolutions and are counted at the tf32 rate.
"""

from __future__ import annotations

from typing import Mapping

from ddm.yamlio import ConfigError

#: The precisions the plan knows, slowest first.
PRECISIONS = ("fp32", "tf32", "bf16")
#: Kinds of work of the throughput table.
KINDS = ("train", "sample", "features", "features_inception")
#: The precision of a job that is not a training (sampling, FID: fp32 with cuDNN's default TF32 convolutions).
INFERENCE_PRECISION = "tf32"


def train_precision(train: Mapping) -> str:
    """The precision a training of ``train`` (a resolved ``train:`` block) runs in on a GPU."""
    if train.get("precision") == "bf16":
        return "bf16"
    return "tf32" if train.get("tf32") else "fp32"


def card_of(table: Mapping, name: str | None) -> dict:
    """The card ``name`` of the table (default: the GPU row's ``card``); one line when unknown."""
    name = name or table["devices"]["gpu"]["card"]
    cards = table.get("cards", {})
    if name not in cards:
        raise ConfigError(f"--gpu {name}: not a card of the throughput table (known: {', '.join(sorted(cards))}); "
                          "add its dense peaks under `cards:` in ddm/data/throughput.yaml")
    return {"key": name, **cards[name]}


def gpu_device(table: Mapping, card: str | None = None) -> dict:
    """The plan's GPU row for ``card``: ``rates[precision][kind]`` in FLOP/s (measured where
    benchmarks/gpu_check.sh measured that card, else peak x efficiency), memory and a source line."""
    gpu, c = table["devices"]["gpu"], card_of(table, card)
    measured = (table.get("measured") or {}).get(c["key"]) or {}
    rates, used = {}, set()
    for prec in PRECISIONS:
        est = c["peak"][prec] * gpu["efficiency"][prec]
        got = measured.get(prec) or {}
        rates[prec] = {kind: float(got.get(kind, est)) for kind in KINDS}
        used |= {f"{prec} {kind}" for kind in got}
    eff = ", ".join(f"{gpu['efficiency'][p]:.0%} {p}" for p in PRECISIONS)
    source = (f"{c['name']}: estimate, dense peak x efficiency ({eff}; fp32 {c['peak']['fp32'] / 1e12:g}, tf32 "
              f"{c['peak']['tf32'] / 1e12:g}, bf16 {c['peak']['bf16'] / 1e12:g} TFLOP/s); ")
    source += (f"measured by benchmarks/gpu_check.sh for {', '.join(sorted(used))}: {measured.get('source', '')}"
               if used else "no GPU measured yet")
    return {**gpu, "name": c["name"], "card": c["key"], "memory_gb": float(c["memory_gb"]), "rates": rates,
            "flops_per_s": rates[INFERENCE_PRECISION], "source": source}


def rate(dev: Mapping, kind: str, precision: str) -> float | None:
    """FLOP/s of ``kind`` work in ``precision`` on ``dev`` (a CPU row has one rate per kind)."""
    if "rates" in dev:
        return dev["rates"][precision].get(kind)
    return dev["flops_per_s"].get(kind)


#: What lowers a rule's GPU memory per GPU, in the words of params.yaml (``accum``: gradient
#: accumulation, the same batch in smaller passes; ddm.training).
MEMORY_FIX = {
    "train": "raise the dataset's train.accum or train.gpus (or lower train.batch_size)",
    "train_task": "raise accum in the conditioned preset's train block (or the task's own train block)",
    "train_autoencoder": "raise accum in the task's latent block",
    "sample_task": "lower the conditioned preset's batch_size (the sampling batch)",
    None: "lower its batch size (one GPU per job)",
}


def memory_error(rows, dev: Mapping, profile: Mapping) -> str | None:
    """The first job that does not fit: GPU memory above the card's, or host memory above the
    profile's ``mem_mb`` for its rule; None when every job fits."""
    for r in rows:
        if r.device == "gpu" and r.gpu_mem_gb > dev["memory_gb"]:
            return (f"{_job(r, 'gpu_mem_gb')}: needs {r.gpu_mem_gb:.1f} GB of GPU memory per GPU, more than the "
                    f"{dev['name']}'s {dev['memory_gb']:.0f} GB: " + MEMORY_FIX.get(r.rule, MEMORY_FIX[None]))
        mem_mb = (profile.get(r.rule) or {}).get("mem_mb", (profile.get("__default__") or {}).get("mem_mb"))
        if mem_mb is not None and r.mem_gb * 1000 > float(mem_mb):
            return (f"{_job(r, 'mem_gb')}: needs {r.mem_gb:.1f} GB of host memory, more than the profile's mem_mb "
                    f"{mem_mb}: raise set-resources: {r.rule}: mem_mb to at least {int(r.mem_gb * 1000) + 1}")
    return None


def _job(row, key: str) -> str:
    """``rule (wildcards)`` of a row's largest job by ``key``."""
    which = getattr(row, "largest", {}).get(key)
    return f"{row.rule} ({which})" if which else row.rule
