"""What one forward pass of each network of the pipeline costs, counted on the meta device (no
weights, no memory, seconds for the 178M U-Net): FLOPs per image (torch.utils.flop_counter,
multiply-add = 2 FLOPs), parameters, the bytes of every intermediate tensor per image, and the bytes
autograd saves for the backward pass per image (a training step's activations). ``ddm.plan`` turns
them into job times with the throughput table (ddm/data/throughput.yaml) and into memory per job."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class NetCost:
    flops: float       # forward FLOPs per image
    params: int        # parameters
    act_bytes: float   # bytes of the forward's intermediate tensors per image (fp32)
    peak_bytes: float = 0.0  # bytes of the largest intermediate tensor per image
    saved_bytes: float = 0.0  # bytes autograd keeps for the backward pass per image (fp32, weights excluded)


class _Activations(TorchDispatchMode):
    """Sums the bytes of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.bytes = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
                self.peak = max(self.peak, t.numel() * t.element_size())
        return out


def saved_for_backward(net: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``net(*inputs)`` (a training
    step's activations), each tensor once, the parameters left out (they are counted as state)."""
    params = {id(p) for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params:
            saved[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(*inputs)
    return sum(saved.values())


def measure(net: torch.nn.Module, *inputs: torch.Tensor, batch: int = 1, training: bool = True) -> NetCost:
    """Forward cost of ``net(*inputs)`` (meta tensors of batch ``batch``), per image; ``training``:
    also the bytes a training step keeps for its backward pass."""
    counter, acts = FlopCounterMode(display=False), _Activations()
    with torch.no_grad(), counter, acts:
        net(*inputs)
    params = sum(p.numel() for p in net.parameters())
    saved = saved_for_backward(net, *inputs) if training else 0
    return NetCost(counter.get_total_flops() / batch, params, acts.bytes / batch, acts.peak / batch, saved / batch)


def _meta(*shape) -> torch.Tensor:
    return torch.zeros(*shape, device="meta")


@lru_cache(maxsize=None)
def _unet(cfg_json: str) -> NetCost:
    from ddm.experiment import build

    cfg = json.loads(cfg_json)
    with torch.device("meta"):
        net = build(cfg).make_model()
    c, r = cfg["channels"], cfg["resolution"]
    return measure(net, _meta(1, c, r, r), torch.full((1,), 0.5, device="meta"))


def unet_cost(cfg: Mapping) -> NetCost:
    """The U-Net of a resolved (dataset, method) config (``ddm.config.resolve``)."""
    keys = ("method", "model", "channels", "resolution", "sampling")
    return _unet(json.dumps({k: cfg[k] for k in keys if k in cfg}, sort_keys=True))


@contextmanager
def _swin_without_weights():
    """The Swin-B condition encoder built without its weight file (only its shape matters here)."""
    import ddm.swin as swin
    from torchvision.models import swin_b

    saved = swin.load_swin_b
    swin.load_swin_b = lambda weights_path=None: swin_b(weights=None)
    try:
        yield
    finally:
        swin.load_swin_b = saved


@lru_cache(maxsize=None)
def _cond_unet(cfg_json: str) -> NetCost:
    from ddm.conditioned import build_task

    cfg = json.loads(cfg_json)
    with _swin_without_weights(), torch.device("meta"):
        net = build_task(cfg).make_model()
    c, r = cfg["channels"], cfg["resolution"]
    rc = cfg.get("cond_resolution", r)
    return measure(net, _meta(1, c, r, r), torch.full((1,), 0.5, device="meta"), _meta(1, cfg["cond_channels"], rc, rc))


def task_net_cost(cfg: Mapping) -> NetCost:
    """The conditioned U-Net of a resolved (task, method) config (``ddm.config.resolve_task``)."""
    return _cond_unet(json.dumps(dict(cfg), sort_keys=True, default=str))


@lru_cache(maxsize=None)
def _autoencoder(latent_json: str, channels: int, size: int) -> NetCost:
    from ddm.autoencoder import build_autoencoder

    with torch.device("meta"):
        ae = build_autoencoder(json.loads(latent_json), channels)
    return measure(ae, _meta(1, channels, size, size))


def autoencoder_cost(latent: Mapping, channels: int, size: int) -> NetCost:
    """A latent task's KL autoencoder, encoder and decoder, at ``size`` pixels."""
    return _autoencoder(json.dumps(dict(latent), sort_keys=True), channels, size)


@lru_cache(maxsize=None)
def extractor_cost(name: str) -> NetCost:
    """The FID feature extractor: the digits classifier (8x8 grey) or Inception-v3 at 299 px
    (torchvision's architecture, the shape of torch-fidelity's inception-v3-compat)."""
    if name == "digits-classifier":
        from ddm.digits_classifier import DigitsClassifier

        with torch.device("meta"):
            net = DigitsClassifier()
        return measure(net, _meta(1, 1, 8, 8), training=False)
    from torchvision.models import inception_v3

    with torch.device("meta"):
        net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    return measure(net, _meta(1, 3, 299, 299), training=False)
