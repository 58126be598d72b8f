"""The sampler ceiling (beyond the paper): a network with no error.

For a Gaussian path x_t = alpha_t x0 + sigma_t eps and the empirical data distribution (the
training images x_1..x_n, equally likely), the L2-optimal denoiser is known in closed form:

    E[x0 | x_t] = sum_i w_i x_i,   w = softmax_i( -||x_t - alpha_t x_i||^2 / (2 sigma_t^2) ).

``PosteriorMeanDenoiser`` wraps it in the output format each process' samplers expect, so any
sampler can be driven by it in place of a trained network. The FID of its samples is what the
sampler alone costs (discretisation error); the distance from there to a trained model's FID
is network error. DDM with h_t = c is such a path (x_t = (1 - t) x0 + sqrt(t) eps, Eq. 7 with
H_t = -t x0): its heads are phi = -E[x0 | x_t] and eps = (x_t - (1 - t) E[x0 | x_t]) / sqrt(t).
The VP/VE networks predict eps from the scaled input c_in(t) x_t (``ddm.baselines``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddm.process import DecoupledProcess
from ddm.sampling import alpha_sigma
from ddm.times import expand_t

__all__ = ["PosteriorMeanDenoiser"]


class PosteriorMeanDenoiser:
    """``net(x, t) -> heads`` computed from the training set instead of learned.

    ``data`` is (N, C, H, W) in the model's range; ``process`` a DDM process with h_t = c, a
    ``VPSDE`` or a ``VESDE`` (other h_t families are not Gaussian paths: refused). Computations run
    in float64; ``chunk`` bounds the (batch x N) distance matrix kept at once.
    """

    def __init__(self, data: Tensor, process, *, chunk: int = 4096):
        if not isinstance(data, Tensor) or data.ndim != 4 or data.shape[0] < 1:
            raise ValueError(f"the posterior-mean denoiser needs training images (N, C, H, W); got {getattr(data, 'shape', data)!r}")
        self.alpha, self.sigma = alpha_sigma(process)  # refuses non-Gaussian h_t families
        self.process = process
        self.ddm = isinstance(process, DecoupledProcess)
        self.flat = data.detach().flatten(1).to(torch.float64)
        self.sq = (self.flat**2).sum(1)
        self.shape = tuple(data.shape[1:])
        self.chunk = int(chunk)
        self.calls = 0

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """E[x0 | x_t = x] under the empirical distribution, per sample (t of shape (B,))."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x has shape {tuple(x.shape[1:])}; the training images have {self.shape}")
        t64 = t.to(torch.float64).reshape(-1).expand(x.shape[0])
        a, s = self.alpha(t64)[:, None], self.sigma(t64)[:, None]
        xf = x.detach().flatten(1).to(torch.float64)
        out = []
        for i in range(0, xf.shape[0], self.chunk):
            xb, ab, sb = xf[i : i + self.chunk], a[i : i + self.chunk], s[i : i + self.chunk]
            d2 = (xb**2).sum(1, keepdim=True) - 2 * ab * (xb @ self.flat.T) + ab**2 * self.sq[None]
            w = torch.softmax(-d2 / (2 * sb**2), dim=1)
            out.append(w @ self.flat)
        return torch.cat(out).reshape(x.shape).to(x.dtype)

    def __call__(self, x_in: Tensor, t: Tensor) -> tuple[Tensor, ...]:
        self.calls += 1
        t = t.to(x_in).reshape(-1).expand(x_in.shape[0])
        if self.ddm:  # heads (phi, eps) of h_t = c: phi = -x0
            x0 = self.x0(x_in, t)
            return -x0, (x_in - expand_t(1 - t, x_in) * x0) / expand_t(t.sqrt(), x_in)
        x = x_in / expand_t(self.process.c_in(t), x_in)  # the baselines feed c_in(t) x_t
        x0 = self.x0(x, t)
        return ((x - expand_t(self.alpha(t), x) * x0) / expand_t(self.sigma(t), x),)

    def eval(self) -> "PosteriorMeanDenoiser":  # the CLI treats it like a network
        return self
