"""The paper preset's GPU smoke run (benchmarks/gpu_check.sh runs it first; it documents the budget).

    python benchmarks/paper_smoke.py gpu|cpu OUT_DIR [--steps N] [--table PATH]

What it does, offline, with at most 64 MiB of data beside the repository:

1. a data file in CIFAR-10's own format (the python batches ``data_batch_1..5`` and ``test_batch``
   that ``ddm.datasets`` reads for ``cifar10``): 32x32 crops of the real colour photos that ship
   inside scikit-image and scikit-learn (gpu: 10,000 train + 1,000 test images, 32 MiB; cpu: 320 + 64);
2. the paper preset's CIFAR-10 DDM (Table 6: the 178M U-Net at full depth and width; cpu: the
   tiny network of the dry mode) trained for ``--steps`` on those images, bf16 + TF32 on the GPU,
   with a warm-up of a tenth of the steps (the paper's 5,000 would keep the learning rate near 0);
   the loss must fall (the mean of the last fifth of the steps below that of the first fifth);
3. images/s of training and of sampling (Alg. 2, NFE 10, the trained weights: an EMA of 0.9999
   has not moved in a few hundred steps), converted to FLOP/s (ddm.netcost) and written into the
   throughput table's ``measured:`` block for the card (ddm/data/throughput.yaml on the GPU; a
   copy under OUT_DIR in the dry mode), which the plan then uses (ddm.gpucards);
4. a FID of the samples (gpu: 1,000) against the test images: Inception-v3 with the real weights
   when they are on this machine (torch-fidelity's file under $TORCH_HOME), else the digits
   classifier on 8x8 grey versions of both sets (trained here: 30 epochs, the dry mode 5), and the
   summary says which.

One summary is printed at the end and written to OUT_DIR/summary.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ddm import metrics as M
from ddm.config import resolve
from ddm.datasets import load_dataset, to_model_range, to_uint8
from ddm.experiment import build
from ddm.generate import generate
from ddm.digits_classifier import DIGITS_CLASSIFIER
from ddm.io import MissingWeightsError, atomic_write, save_json
from ddm.netcost import extractor_cost, unet_cost
from ddm.resources import THROUGHPUT
from ddm.training import TrainConfig, Trainer
from ddm.validation import load_params

#: The dry mode's network: the embedded digits U-Net's shape on 32x32 colour images.
TINY = {"ch": 16, "ch_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
MODES = {  # images per train batch file, test images, batch, steps, samples, sampling batch
    "gpu": dict(per_batch=2000, n_test=1000, batch=128, steps=400, samples=1000, sample_batch=500),
    "cpu": dict(per_batch=64, n_test=64, batch=8, steps=20, samples=32, sample_batch=32),
}
NFE = 10


def photos() -> list[np.ndarray]:
    """The real colour photos shipped inside scikit-image and scikit-learn, (H, W, 3) uint8."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
    return [getattr(data, n)()[..., :3] for n in names] + list(load_sample_images().images)


def crops(images: list[np.ndarray], n: int, gen: torch.Generator) -> tuple[np.ndarray, list[int]]:
    """``n`` 32x32 crops: a random photo, a random square of 32 px to half its short side, area-resized
    to 32x32, flipped at random; (n, 3072) uint8 in CIFAR-10's plane order, and the photo indices."""
    out, labels = np.empty((n, 3072), np.uint8), []
    for i in range(n):
        k = int(torch.randint(len(images), (1,), generator=gen))
        img = images[k]
        side = int(torch.randint(32, max(33, min(img.shape[:2]) // 2), (1,), generator=gen))
        y = int(torch.randint(img.shape[0] - side + 1, (1,), generator=gen))
        x = int(torch.randint(img.shape[1] - side + 1, (1,), generator=gen))
        patch = torch.from_numpy(np.ascontiguousarray(img[y:y + side, x:x + side])).permute(2, 0, 1)[None].float()
        patch = F.interpolate(patch, size=(32, 32), mode="area")[0]
        if torch.rand((), generator=gen) < 0.5:
            patch = patch.flip(-1)
        out[i] = patch.round().clamp(0, 255).to(torch.uint8).reshape(-1).numpy()
        labels.append(k)
    return out, labels


def write_cifar_format(root: Path, per_batch: int, n_test: int, seed: int = 0) -> Path:
    """A CIFAR-10-format folder (``cifar-10-batches-py``) of real-photo crops under ``root``."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    gen, images = torch.Generator().manual_seed(seed), photos()
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data, labels = crops(images, n, gen)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        atomic_write(folder / name, lambda f, b=batch: pickle.dump(b, f, protocol=2))
    return folder


def train(cfg: dict, data: torch.Tensor, mode: str, steps: int, out: Path, dev: torch.device) -> tuple:
    """The training of step 2: (trained network, losses per log window, images/s, its experiment)."""
    m = MODES[mode]
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    opts = dict(precision="bf16", tf32=True) if dev.type == "cuda" else dict(lr=2.0e-3, tf32=False)
    tcfg = TrainConfig(**{**{k: v for k, v in cfg["train"].items() if k in keys}, "batch_size": m["batch"],
                          "steps": steps, "warmup": max(1, steps // 10), "ckpt_every": steps, **opts})
    exp = build(cfg)
    torch.manual_seed(0)
    tr = Trainer(exp.make_model(), exp.objective, data, tcfg, out / "checkpoints", device=dev, progress=False)
    tr.resume()
    losses, times, window = [], [], max(1, steps // 20)
    for i in range(steps):
        t = time.perf_counter()
        tr.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        if (i + 1) % window == 0:
            losses.append(float(tr.log()["loss"]))
    tr.check_finite()
    return tr.model.eval(), losses, m["batch"] / statistics.median(times[len(times) // 5:]), exp


def fid_of(samples: torch.Tensor, real: torch.Tensor, work: Path, cuda: bool, dry: bool = False) -> dict:
    """Step 4: Inception-v3 with its real weights when present, else the digits classifier on 8x8 grey."""
    try:
        weights, extractor = M.resolve_weights(M.INCEPTION, None), M.INCEPTION
        a, b, note = samples, real, "Inception-v3 (real weights)"
    except MissingWeightsError:
        from ddm.digits_classifier import train_digits_classifier

        weights, extractor = work / "digits_classifier.pt", DIGITS_CLASSIFIER
        train_digits_classifier(weights, seed=0, **(dict(epochs=5, min_accuracy=0.5) if dry else {}))
        grey = lambda x: F.avg_pool2d(x.float().mean(1, keepdim=True), 4).round().to(torch.uint8)  # noqa: E731
        a, b = grey(samples), grey(real)
        note = "digits classifier on 8x8 grey images: the Inception weights are not on this machine"
        note += " (dry mode: the classifier trained 5 epochs)" if dry else ""
    t = time.perf_counter()
    fa = M.extract_features(a, extractor, weights, cuda=cuda)
    secs = time.perf_counter() - t
    fb = M.extract_features(b, extractor, weights, cuda=cuda)
    value = M.frechet_distance(*M.feature_statistics(fa), *M.feature_statistics(fb))
    return {"fid": value, "extractor": extractor, "note": note, "num_samples": len(a), "num_real": len(b),
            "features_images_per_s": len(a) / secs}


def card_key(name: str) -> str | None:
    """The throughput table's key of a CUDA device name (None: a card the table does not name)."""
    return next((k for k in ("h100", "a100") if k in name.lower()), None)


def write_measured(table: Path, card: str, figures: dict) -> None:
    """Merge ``figures`` ({source, precision: {kind: FLOP/s}}) into the table's ``measured:`` block,
    the rest of the file (its comments) untouched; written atomically."""
    text = table.read_text()
    measured = yaml.safe_load(text).get("measured") or {}
    measured[card] = {**measured.get(card, {}), **figures}
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("measured:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "" or not lines[i].startswith(" ")),
               len(lines))
    block = yaml.safe_dump({"measured": measured}, sort_keys=False, width=110)
    new = "".join(lines[:start]) + block + "".join(lines[end:])
    atomic_write(table, lambda f: f.write(new.encode()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, help="training steps (default: gpu 400, cpu 20)")
    ap.add_argument("--table", type=Path, help="throughput table to write (default: gpu the package's, cpu a copy in OUT)")
    args = ap.parse_args(argv)
    gpu = args.mode == "gpu"
    if gpu and not torch.cuda.is_available():
        print("paper_smoke.py: no CUDA device here; run `cpu` for the dry mode", file=sys.stderr)
        return 2
    m, dev, t0 = MODES[args.mode], torch.device("cuda" if gpu else "cpu"), time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if not gpu:
        torch.set_num_threads(1)
    params = load_params("params.yaml")
    params["preset"] = "paper"
    cfg = resolve(params, "cifar10", "ddm")
    if not gpu:
        cfg["model"] = {**cfg["model"], **TINY}
    folder = write_cifar_format(args.out / "data", m["per_batch"], m["n_test"])
    data_mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    train_u8 = load_dataset("cifar10", args.out / "data", "train")
    test_u8 = load_dataset("cifar10", args.out / "data", "test")
    net, losses, train_ips, exp = train(cfg, to_model_range(train_u8), args.mode, args.steps or m["steps"], args.out, dev)
    fifth = max(1, len(losses) // 5)
    falling = statistics.mean(losses[-fifth:]) < statistics.mean(losses[:fifth])
    samples, sample_ips = sample(exp, net, m, dev)
    fid = fid_of(to_uint8(samples.cpu()), test_u8, args.out, gpu, dry=not gpu)
    name = torch.cuda.get_device_name(0) if gpu else "cpu (dry run)"
    card = card_key(name) if gpu else "dry-run"
    table = args.table or (THROUGHPUT if gpu else args.out / "throughput.yaml")
    if not gpu and not table.exists():
        table.write_text(Path(THROUGHPUT).read_text())
    if card:
        write_measured(Path(table), card, figures_of(unet_cost(cfg).flops, train_ips, sample_ips, fid, name, gpu))
    summary = {"mode": args.mode, "device": name, "card": card, "table": str(table) if card else None,
               "network": {**cfg["model"], "parameters": sum(p.numel() for p in net.parameters())},
               "data": {"train": len(train_u8), "test": len(test_u8), "mib": round(data_mib, 1)},
               "train": {"steps": args.steps or m["steps"], "batch": m["batch"], "images_per_s": train_ips,
                         "loss_windows": losses, "loss_fell": falling},
               "sample": {"nfe": NFE, "images_per_s": sample_ips, "num_samples": m["samples"]},
               "fid": fid, "seconds": time.perf_counter() - t0}
    save_json(summary, args.out / "summary.json")
    print_summary(summary, data_mib)
    return 0 if falling else 1


def sample(exp, net, m: dict, dev: torch.device) -> tuple[torch.Tensor, float]:
    """Step 3's sampling: ``m["samples"]`` samples at NFE 10 and images/s (after a warm-up batch)."""
    with torch.no_grad():
        generate(exp, net, NFE, list(range(8)), batch_size=8, device=dev)
        t = time.perf_counter()
        samples = generate(exp, net, NFE, list(range(m["samples"])), batch_size=m["sample_batch"], device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return samples, m["samples"] / (time.perf_counter() - t)


def figures_of(flops: float, train_ips: float, sample_ips: float, fid: dict, name: str, gpu: bool) -> dict:
    """The throughput table's ``measured:`` entry: FLOP/s per precision and kind, and its source."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    figures = {"source": f"benchmarks/paper_smoke.py on {name}, torch {torch.__version__}, {when}",
               ("bf16" if gpu else "fp32"): {"train": 3 * flops * train_ips},
               "tf32": {"sample": flops * NFE * sample_ips}}
    if fid["extractor"] == M.INCEPTION:
        figures["tf32"]["features_inception"] = extractor_cost(M.INCEPTION).flops * fid["features_images_per_s"]
    return figures


def print_summary(summary: dict, data_mib: float) -> None:
    name, losses, fid, card = summary["device"], summary["train"]["loss_windows"], summary["fid"], summary["card"]
    where = f"written to {summary['table']} for {card}" if card else "not written: a card the table does not name"
    print(f"paper smoke ({summary['mode']}, {name}): {summary['network']['parameters'] / 1e6:.2f}M parameters, "
          f"{summary['data']['train']} + {summary['data']['test']} images ({data_mib:.1f} MiB, CIFAR-10 format)\n"
          f"  train: {summary['train']['images_per_s']:.1f} images/s, loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"({'falling' if summary['train']['loss_fell'] else 'NOT FALLING'}) over {summary['train']['steps']} steps\n"
          f"  sample: {summary['sample']['images_per_s']:.1f} images/s at NFE {NFE}\n"
          f"  FID of {fid['num_samples']} samples: {fid['fid']:.2f} ({fid['note']})\n"
          f"  throughput table: {where}\n"
          f"  {summary['seconds']:.0f} s in all")


if __name__ == "__main__":
    sys.exit(main())
