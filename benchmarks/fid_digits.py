"""Benchmark: digits FID end to end through torch-fidelity (digits-classifier extractor).

Builds N "samples" (default 10,000) from the digits train split, tiled and jittered (random
one-pixel shifts plus +-8 grey-level noise), and pure-noise images; times

  * the end-to-end ``ddm.metrics.fid`` call (feature extraction + statistics + Fréchet distance),
  * feature extraction alone (images/s),
  * the reference statistics of the train split and (unless --weights is given) the training of
    the classifier.

Run:  .venv/bin/python benchmarks/fid_digits.py [--n 10000] [--batch-size 500] [--weights PATH]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddm import metrics as M
from ddm import fidstats
from ddm.datasets import load_dataset
from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier


def jittered_tiles(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(n) % len(x)
    windows = F.pad(x[idx].float(), (1, 1, 1, 1))[:, 0].unfold(1, 8, 1).unfold(2, 8, 1)
    s = torch.randint(0, 3, (n, 2), generator=g)
    out = windows[torch.arange(n), s[:, 0], s[:, 1]][:, None]
    out = out + torch.randint(-8, 9, out.shape, generator=g)
    return out.clamp(0, 255).to(torch.uint8)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--weights", type=Path, default=None, help="classifier checkpoint (default: train one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {cmd}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")

    work = Path(tempfile.mkdtemp(prefix="fid_digits_"))
    train = load_dataset("digits", None, "train")
    if args.weights is None:
        args.weights = work / "digits_classifier.pt"
        t = time.perf_counter()
        acc = train_digits_classifier(args.weights, seed=args.seed)
        print(f"classifier training: {time.perf_counter() - t:.2f} s, test accuracy {acc:.4f}")
    ref = work / "digits_train_stats.npz"
    t = time.perf_counter()
    fidstats.reference_stats(train, DIGITS_CLASSIFIER, args.weights, ref, batch_size=args.batch_size)
    print(f"reference stats ({len(train)} train images): {time.perf_counter() - t:.2f} s")

    samples = jittered_tiles(train, args.n, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    noise = torch.randint(0, 256, (args.n, 1, 8, 8), dtype=torch.uint8, generator=g)

    M.extract_features(samples[:100], DIGITS_CLASSIFIER, args.weights)  # warm-up
    t = time.perf_counter()
    feats = M.extract_features(samples, DIGITS_CLASSIFIER, args.weights, batch_size=args.batch_size)
    dt = time.perf_counter() - t
    print(f"feature extraction: {len(samples)} images in {dt:.2f} s = {len(samples) / dt:,.0f} images/s "
          f"(features {feats.shape[1]}-d, batch {args.batch_size})")

    for name, x in (("jittered train tiles", samples), ("uniform noise", noise)):
        t = time.perf_counter()
        r = M.fid(x, ref, DIGITS_CLASSIFIER, args.weights, batch_size=args.batch_size)
        dt = time.perf_counter() - t
        print(f"FID end to end, {name}: {r['fid']:.3f} (n={r['num_samples']}, ref {r['reference']}) "
              f"in {dt:.2f} s")


if __name__ == "__main__":
    main()
