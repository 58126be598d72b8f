"""Closed-form optimal predictors for data whose answers are known exactly.

Data: every pixel independent, x0 ~ N(mu, s^2) (s = 0 is a point mass). For the h_t families
whose H_t is linear in phi (constant, linear, quadratic), the latent vector
w = (x0, z_1..z_k, eps) is Gaussian, phi = S w and x_t = L(t) . w, so

    E[w | x_t] = m_w + Sigma_w L (x_t - L . m_w) / (L^T Sigma_w L)

gives the L2-optimal network outputs E[phi | x_t] and E[eps | x_t] in closed form. Both are
affine in x_t, so the paper's sampler becomes a scalar linear-Gaussian recursion
x' = A x + b + sigma xi whose output mean and variance are computed exactly here.
"""

from __future__ import annotations

import math

import torch

from ddm.baselines import VPSDE
from ddm.families import HtFamily, SinFamily


def _probe_solve(family: HtFamily) -> torch.Tensor:
    """S (n_params, 1 + n_free): phi = S @ (x0, z) for one scalar pixel."""
    cols = []
    for m in range(1 + family.n_free):
        x0 = torch.full((1, 1, 1, 1), 1.0 if m == 0 else 0.0, dtype=torch.float64)
        z = None
        if family.n_free:
            z = torch.zeros(1, family.n_free, 1, 1, dtype=torch.float64)
            if m > 0:
                z[0, m - 1] = 1.0
        cols.append(family.solve(x0, z).reshape(-1))
    return torch.stack(cols, dim=1)


def _probe_H(family: HtFamily, t: float) -> torch.Tensor:
    """g (n_params,): H_t(phi) = g . phi for one scalar pixel."""
    g = []
    for j in range(family.n_params):
        e = torch.zeros(1, family.n_params, 1, 1, dtype=torch.float64)
        e[0, j] = 1.0
        g.append(family.H(e, torch.tensor([t], dtype=torch.float64)).reshape(()))
    return torch.stack(g)


class GaussianOracle:
    """E[phi | x_t], E[eps | x_t] for x0 ~ N(mu, s^2) per pixel (H linear in phi)."""

    def __init__(self, family: HtFamily, mu: float, s: float):
        if isinstance(family, SinFamily) and s > 0:
            raise ValueError("sin's H is nonlinear in x0: only the point mass is closed-form")
        self.family, self.mu, self.s = family, float(mu), float(s)
        self.S = _probe_solve(family) if not isinstance(family, SinFamily) else None
        self.calls = 0

    def coefficients(self, t: float):
        """Affine maps x -> phi_hat (p0 + p1 x, per parameter) and x -> eps_hat (e0 + e1 x)."""
        if isinstance(self.family, SinFamily):  # point mass: phi known, eps from x
            a = self.family.solve(torch.full((1, 1, 1, 1), self.mu, dtype=torch.float64)).reshape(1)
            h = self.family.H(a.reshape(1, 1, 1, 1), torch.tensor([t], dtype=torch.float64)).item()
            rt = math.sqrt(t)
            return a, torch.zeros(1, dtype=torch.float64), -(self.mu + h) / rt, 1 / rt
        g = _probe_H(self.family, t)
        n = 1 + self.family.n_free
        L = torch.zeros(n + 1, dtype=torch.float64)
        L[:n] = g @ self.S
        L[0] += 1.0
        L[n] = math.sqrt(t)
        var_w = torch.ones(n + 1, dtype=torch.float64)
        var_w[0] = self.s**2
        m_w = torch.zeros(n + 1, dtype=torch.float64)
        m_w[0] = self.mu
        gain = var_w * L / (L**2 @ var_w)
        w0 = m_w - gain * (L @ m_w)  # E[w | x] = w0 + gain * x
        p0, p1 = self.S @ w0[:n], self.S @ gain[:n]
        return p0, p1, w0[n].item(), gain[n].item()

    def __call__(self, x: torch.Tensor, t: torch.Tensor):
        self.calls += 1
        tv = float(t.reshape(-1)[0])
        p0, p1, e0, e1 = self.coefficients(tv)
        phi = torch.cat([p0[j] + p1[j] * x for j in range(self.family.n_params)], dim=1)
        return phi, e0 + e1 * x

    def step_affine(self, t: float, t_next: float) -> tuple[float, float, float]:
        """The paper's sampler step (Eq. 11) as x' = A x + b + sigma xi, computed by hand."""
        p0, p1, e0, e1 = self.coefficients(t)
        if isinstance(self.family, SinFamily):
            ht = self.family.H(p0.reshape(1, 1, 1, 1), torch.tensor([t], dtype=torch.float64)).item()
            hn = self.family.H(p0.reshape(1, 1, 1, 1), torch.tensor([t_next], dtype=torch.float64)).item()
            dH0, dH1 = hn - ht, 0.0
        else:
            g, gn = _probe_H(self.family, t), _probe_H(self.family, t_next)
            dH0, dH1 = ((gn - g) @ p0).item(), ((gn - g) @ p1).item()
        c = (t - t_next) / math.sqrt(t)
        A = 1 + dH1 - c * e1
        b = dH0 - c * e0
        return A, b, math.sqrt((t - t_next) * t_next / t)

    def output_moments(self, grid: torch.Tensor) -> tuple[float, float]:
        """Exact mean and variance of the sampler's output, starting from N(0, 1)."""
        m, v = 0.0, 1.0
        for i in range(grid.numel() - 1):
            A, b, sd = self.step_affine(float(grid[i]), float(grid[i + 1]))
            m, v = A * m + b, A * A * v + sd * sd
        return m, v


class VPGaussianOracle:
    """E[eps | x_t] for x0 ~ N(mu, s^2) under the VP-SDE: sigma (x - alpha mu)/(alpha^2 s^2 + sigma^2)."""

    def __init__(self, sde: VPSDE, mu: float, s: float):
        self.sde, self.mu, self.s = sde, mu, s
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor):
        self.calls += 1
        a = self.sde.alpha(t).reshape(-1, 1, 1, 1).to(x)
        sg = self.sde.sigma(t).reshape(-1, 1, 1, 1).to(x)
        return (sg * (x - a * self.mu) / (a**2 * self.s**2 + sg**2),)
