"""The h_t families of the decoupled forward process (paper §4.2, Eq. 6-7, Table 4, App. B).

The forward process (Eq. 6, ``ddm.process.DecoupledProcess``) is

    x_t = x0 + H_t(phi) + sqrt(t) * eps,    H_t(phi) = int_0^t h_s(phi) ds,    t in [0, 1],

and its image-to-zero part must reach zero at t = 1: ``x0 + H_1(phi) = 0``.

An h_t family is one small class: it knows how many parameter maps phi holds, how to evaluate
H_t(phi), and how to solve the ground-truth phi from x0 (App. B, "Obtaining ground truth of
phi"): the free parameters are drawn from N(0, I) and the last one is solved from
``x0 + H_1(phi) = 0``. phi is stored as a tensor whose channel axis concatenates the
parameter maps (each shaped like x0), so a network can predict it directly:
``phi.shape == (B, n_params * C, H, W)``.

Families (Table 4), registered by the name used in params.yaml: a subclass of :class:`HtFamily`
that sets ``name`` adds itself to :data:`FAMILIES` when it is defined (``__init_subclass__``), so
a new family is one class (and its params.yaml entry); its ``label`` is its row of Table 4.

========== ================== ===================================== =========================
name       h_t                H_t                                   solved parameter
========== ================== ===================================== =========================
constant   c                  c t                                   c = -x0
linear     a t + c            a t^2/2 + c t                         c = -x0 - a/2
quadratic  a t^2 + b t + c    a t^3/3 + b t^2/2 + c t               c = -x0 - a/3 - b/2
exp        e^{a t} + c        (e^{a t} - 1)/a + c t                 c = -x0 - (e^a - 1)/a
sin        sin(a t)           (1 - cos(a t))/a                      a: (1 - cos a)/a = -x0
========== ================== ===================================== =========================

``sin`` has a single parameter per pixel and no free one. f(a) = (1 - cos a)/a is odd and
increases monotonically on [-A, A] with A = 2.33112237 (the root of a sin a = 1 - cos a),
where it reaches f(A) = 0.72461334. Every other solution lies on a later, narrower branch.
We take the root on the monotone branch; for |x0| > f(A) there is no solution at all (this is
the paper's "limited range" remark, §5.4), and we use a = -sign(x0) A, the parameter that
brings x0 + H_1 closest to zero. Those pixels keep a residual mean ``x0 + H_1 != 0`` at t = 1
(at most 1 - 0.7246 = 0.2754 in [-1, 1] data); ``SinFamily.residual(x0)`` reports it.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import Tensor

from ddm.times import expand_t

__all__ = ["HtFamily", "ConstantFamily", "LinearFamily", "QuadraticFamily", "ExpFamily", "SinFamily", "FAMILIES",
           "get_family"]


#: Every h_t family by its params.yaml name (Table 4), in the order they were defined: filled by
#: :meth:`HtFamily.__init_subclass__`.
FAMILIES: dict[str, type["HtFamily"]] = {}


class HtFamily(abc.ABC):
    """One h_t family: H_t(phi) and the ground-truth phi solved from x0 (App. B).

    Subclasses set ``name`` (the params.yaml name), ``label`` (h_t in LaTeX, as Table 4's row
    writes it), ``n_params`` and ``n_free`` and implement ``H`` and ``solve``.
    ``solve(x0, z)`` maps x0 and the free parameters z (``n_free`` maps, drawn from N(0, I))
    to phi; ``sample_phi`` draws z and calls it. Defining a subclass with a ``name`` registers it
    in :data:`FAMILIES` (``del FAMILIES[name]`` removes it again).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    n_params: ClassVar[int]
    n_free: ClassVar[int]

    def __init_subclass__(cls, **kwargs):
        """Register a subclass that sets ``name`` (a subclass that inherits it is not registered)."""
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        missing = [k for k in ("label", "n_params", "n_free") if not hasattr(cls, k)]
        if missing:
            raise TypeError(f"h_t family '{cls.name}' ({cls.__qualname__}) must set {', '.join(missing)}")
        if cls.name in FAMILIES:
            raise ValueError(f"h_t family '{cls.name}' is already registered by {FAMILIES[cls.name].__qualname__}")
        FAMILIES[cls.name] = cls

    def __init__(self, clamp_free: float | None = None):
        if clamp_free is not None and clamp_free <= 0:
            raise ValueError(f"clamp_free must be positive or None; got {clamp_free}")
        self.clamp_free = clamp_free

    # -- phi layout -------------------------------------------------------------------------
    def split(self, phi: Tensor) -> tuple[Tensor, ...]:
        """Split phi (B, n_params*C, H, W) into its n_params maps of shape (B, C, H, W)."""
        if phi.ndim < 2 or phi.shape[1] % self.n_params:
            raise ValueError(
                f"phi for family '{self.name}' needs a channel count divisible by "
                f"{self.n_params}; got shape {tuple(phi.shape)}"
            )
        return tuple(phi.chunk(self.n_params, dim=1))

    def phi_channels(self, data_channels: int) -> int:
        """Number of channels a network must output to predict phi."""
        return self.n_params * data_channels

    # -- math -------------------------------------------------------------------------------
    @abc.abstractmethod
    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        """H_t(phi) = int_0^t h_s(phi) ds; t has shape (B,) (or broadcasts against x)."""

    @abc.abstractmethod
    def solve(self, x0: Tensor, z: Tensor | None) -> Tensor:
        """Ground-truth phi from x0 and the free parameters z (App. B)."""

    def sample_phi(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw the free parameters from N(0, I) (optionally clamped) and solve the rest."""
        z = self.draw_free(x0, generator)
        return self.solve(x0, z)

    def draw_free(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """The free parameters z ~ N(0, I), shape (B, n_free*C, H, W), or None."""
        if self.n_free == 0:
            return None
        shape = (x0.shape[0], self.n_free * x0.shape[1], *x0.shape[2:])
        z = torch.randn(shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.clamp_free is not None:
            z = z.clamp(-self.clamp_free, self.clamp_free)
        return z

    def x0_from_phi(self, phi: Tensor) -> Tensor:
        """The image phi implies through x0 = -H_1(phi)."""
        return -self.H(phi, torch.ones(phi.shape[0], device=phi.device, dtype=phi.dtype))

    # -- for subclasses (plug-in families call these from H and solve) ----------------------
    def t_like(self, t: Tensor, like: Tensor) -> Tensor:
        """``t`` (a number, or a (B,) tensor) on ``like``'s device and dtype, shaped to broadcast
        against it ((B, 1, 1, 1) for images): what ``H(phi, t)`` multiplies ``phi`` by."""
        t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
        if t.ndim == 0:
            return t
        return expand_t(t, like)

    def check_free(self, x0: Tensor, z: Tensor | None) -> tuple[Tensor, ...]:
        """The free parameters ``z`` of ``solve(x0, z)`` split into the family's ``n_free`` parts
        (each shaped like ``x0``); () for a family without free parameters; a ValueError naming the
        family and the shapes when ``z`` does not fit ``x0``."""
        if self.n_free == 0:
            return ()
        expected = (x0.shape[0], self.n_free * x0.shape[1], *x0.shape[2:])
        if z is None or tuple(z.shape) != expected:
            got = None if z is None else tuple(z.shape)
            raise ValueError(f"family '{self.name}' needs free parameters of shape {expected}; got {got}")
        return tuple(z.chunk(self.n_free, dim=1))

    def __repr__(self) -> str:
        extra = f", clamp_free={self.clamp_free}" if self.clamp_free is not None else ""
        return f"{type(self).__name__}(name='{self.name}'{extra})"


class ConstantFamily(HtFamily):
    """h_t = c, H_t = c t, c = -x0 (the paper's default, §5.1)."""

    name = "constant"
    label = r"$\mathbf{c}$"
    n_params = 1
    n_free = 0

    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        return phi * self.t_like(t, phi)

    def solve(self, x0: Tensor, z: Tensor | None = None) -> Tensor:
        self.check_free(x0, z)
        return -x0


class LinearFamily(HtFamily):
    """h_t = a t + c, H_t = a t^2/2 + c t; a ~ N(0, I), c = -x0 - a/2; phi = [a, c].

    The authors' code clamps a to [-1, 1]: ``LinearFamily(clamp_free=1.0)``
    (params.yaml: ``clamp_free: 1.0``). The paper draws a from N(0, I) unclamped (default).
    """

    name = "linear"
    label = r"$\mathbf{a}t + \mathbf{c}$"
    n_params = 2
    n_free = 1

    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        a, c = self.split(phi)
        t = self.t_like(t, a)
        return a * t**2 / 2 + c * t

    def solve(self, x0: Tensor, z: Tensor | None) -> Tensor:
        (a,) = self.check_free(x0, z)
        return torch.cat([a, -x0 - a / 2], dim=1)


class QuadraticFamily(HtFamily):
    """h_t = a t^2 + b t + c, H_t = a t^3/3 + b t^2/2 + c t; a, b ~ N(0, I), c solved."""

    name = "quadratic"
    label = r"$\mathbf{a}t^2 + \mathbf{b}t + \mathbf{c}$"
    n_params = 3
    n_free = 2

    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        a, b, c = self.split(phi)
        t = self.t_like(t, a)
        return a * t**3 / 3 + b * t**2 / 2 + c * t

    def solve(self, x0: Tensor, z: Tensor | None) -> Tensor:
        a, b = self.check_free(x0, z)
        return torch.cat([a, b, -x0 - a / 3 - b / 2], dim=1)


def _expm1_over(a: Tensor, t: Tensor) -> Tensor:
    """(e^{a t} - 1)/a, continuous at a = 0 (where it equals t)."""
    at = a * t
    small = at.abs() < 1e-4
    safe_a = torch.where(small, torch.ones_like(a), a)
    series = t * (1 + at / 2 + at**2 / 6)
    return torch.where(small, series, torch.expm1(at) / safe_a)


class ExpFamily(HtFamily):
    """h_t = e^{a t} + c, H_t = (e^{a t} - 1)/a + c t; a ~ N(0, I), c = -x0 - (e^a - 1)/a."""

    name = "exp"
    label = r"$e^{\mathbf{a}t} + \mathbf{c}$"
    n_params = 2
    n_free = 1

    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        a, c = self.split(phi)
        t = self.t_like(t, a)
        return _expm1_over(a, t) + c * t

    def solve(self, x0: Tensor, z: Tensor | None) -> Tensor:
        (a,) = self.check_free(x0, z)
        one = torch.ones((), device=a.device, dtype=a.dtype)
        return torch.cat([a, -x0 - _expm1_over(a, one)], dim=1)


def _one_minus_cos_over(a: Tensor, t: Tensor) -> Tensor:
    """(1 - cos(a t))/a, continuous at a = 0 (where it equals 0)."""
    at = a * t
    small = at.abs() < 1e-3
    safe_a = torch.where(small, torch.ones_like(a), a)
    # 1 - cos(x) = 2 sin^2(x/2) avoids cancellation; series a t^2/2 - a^3 t^4/24 near 0.
    series = a * t**2 / 2 - a**3 * t**4 / 24
    return torch.where(small, series, 2 * torch.sin(at / 2) ** 2 / safe_a)


class SinFamily(HtFamily):
    """h_t = sin(a t), H_t = (1 - cos(a t))/a; one parameter per pixel, solved from x0.

    See the module docstring for the pixels with |x0| > 0.7246, which have no solution.
    """

    name = "sin"
    label = r"$\sin \mathbf{a}t$"
    n_params = 1
    n_free = 0
    #: Root of a sin(a) = 1 - cos(a) on (0, pi): where (1 - cos a)/a peaks.
    A_MAX = 2.3311223704144226
    #: (1 - cos A_MAX)/A_MAX: the largest |x0| that has a solution.
    F_MAX = (1 - math.cos(A_MAX)) / A_MAX

    def H(self, phi: Tensor, t: Tensor) -> Tensor:
        return _one_minus_cos_over(phi, self.t_like(t, phi))

    def solve(self, x0: Tensor, z: Tensor | None = None) -> Tensor:
        """Bisection on the monotone branch [-A_MAX, A_MAX] for (1 - cos a)/a = -x0."""
        self.check_free(x0, z)
        work = x0.double()
        target = (-work).clamp(-self.F_MAX, self.F_MAX)
        lo = torch.full_like(work, -self.A_MAX)
        hi = torch.full_like(work, self.A_MAX)
        one = torch.ones((), dtype=work.dtype, device=work.device)
        for _ in range(60):  # 2 * 2.33 / 2**60: far below float64 resolution
            mid = (lo + hi) / 2
            below = _one_minus_cos_over(mid, one) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return ((lo + hi) / 2).to(x0.dtype)

    def residual(self, x0: Tensor) -> Tensor:
        """x0 + H_1(phi(x0)): zero where a solution exists, else the unreachable remainder."""
        return x0 + self.H(self.solve(x0), torch.ones((), dtype=x0.dtype))


def get_family(name: str, **options) -> HtFamily:
    """Look up an h_t family by its params.yaml name (Table 4)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown h_t family '{name}'; valid names: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](**options)
