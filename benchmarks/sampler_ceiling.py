"""Benchmark: the sampler ceiling on the digits (no network error).

Every sampler of the fair-solver study driven by the exact posterior mean of the 1,347 training
digits (``ddm.ceiling.PosteriorMeanDenoiser``) instead of a network; FID (digits classifier, 500
samples per cell, seeds of repeat 0) against the training images, beside the floor (test split
against the training split). What is left in a cell is the sampler's own discretisation error.

Run:  .venv/bin/python benchmarks/sampler_ceiling.py [--nfe 5 10 20 50] [--num-samples 500]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ddm import metrics as M
from ddm import fidstats
from ddm.baselines import VESDE, VPSDE
from ddm.sde_samplers import sample_ve_em, sample_vp_ancestral, sample_vp_em, sde_grid
from ddm.ceiling import PosteriorMeanDenoiser
from ddm.datasets import load_dataset, to_model_range, to_uint8
from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier
from ddm.process import DecoupledProcess
from ddm.sampling import (SampleRNG, lambda_grid, polynomial_grid, sample_ddim, sample_ddm, sample_dpmpp_2m,
                          uniform_grid)

DDM, VP, VE = DecoupledProcess("constant"), VPSDE(), VESDE(0.01, 16.0)  # VE as the embedded preset's sde
ROWS = {
    "DDM, Alg. 2, uniform t": (DDM, sample_ddm, uniform_grid),
    "DDM, DDIM, uniform t": (DDM, sample_ddim, uniform_grid),
    "DDM, DPM-Solver++(2M), t_i = (1 - i/N)^2": (DDM, sample_dpmpp_2m, lambda n: polynomial_grid(n, 2.0)),
    "DDPM, Euler-Maruyama, uniform t": (VP, sample_vp_em, lambda n: sde_grid(n, 1e-3)),
    "DDPM, ancestral, uniform t": (VP, sample_vp_ancestral, uniform_grid),
    "DDPM, DDIM, uniform lambda": (VP, sample_ddim, lambda n: lambda_grid(n, VP, 1e-3)),
    "SDE (VE), Euler-Maruyama, uniform t": (VE, sample_ve_em, lambda n: sde_grid(n, 1e-5)),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--num-samples", type=int, default=500)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ddm-ceiling-"))
    train = load_dataset("digits", None, "train", resolution=8)
    weights, ref = work / "digits_classifier.pt", work / "reference.npz"
    train_digits_classifier(weights, seed=0)
    fidstats.reference_stats(train, DIGITS_CLASSIFIER, weights, ref)

    def score(u8):
        return M.fid(u8, ref, DIGITS_CLASSIFIER, weights)["fid"]

    floor = score(load_dataset("digits", None, "test", resolution=8))
    print(f"floor (test split vs train split): {floor:.2f}")
    print("| sampler, no network error \\ NFE | " + " | ".join(map(str, a.nfe)) + " |")
    print("|---|" + "---|" * len(a.nfe))
    seeds = [1_000_000 + i for i in range(a.num_samples)]
    for label, (proc, sampler, grid) in ROWS.items():
        cells = []
        for n in a.nfe:
            rng = SampleRNG(seeds)
            noise = rng.randn((1, 8, 8)) * getattr(proc, "prior_std", 1.0)
            x = sampler(PosteriorMeanDenoiser(to_model_range(train), proc), proc, noise, grid(n), rng=rng)
            cells.append(f"{score(to_uint8(x.float().clamp(-1, 1))):.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
