"""The decoupled forward process (paper §4.2, Eq. 6-7, 9-11, 20) and the interface of a forward process.

The forward process (Eq. 6) is

    x_t = x0 + H_t(phi) + sqrt(t) * eps,    H_t(phi) = int_0^t h_s(phi) ds,    t in [0, 1],

so q(x_t | x0) = N(x0 + H_t, t I) (Eq. 7). The image-to-zero part must reach zero at t = 1,
i.e. ``x0 + H_1(phi) = 0``; the zero-to-noise part is a standard Wiener process.

The h_t families (Table 4: h_t, H_t and the ground-truth phi of App. B) are ``ddm.families``;
:class:`DecoupledProcess` takes one by its params.yaml name (``ddm.families.get_family``).

:class:`Process` is the one interface of a forward process that training (``ddm.losses``),
sampling (``ddm.sampling``, ``ddm.baselines``) and ``ddm.experiment`` use: the prior at t = 1,
x_t and the training target of each head, a network call and the x0 estimate of its heads, and
the channels of each head. It knows the maths only: no loss and no params.yaml entry (the
objectives know the process, ``ddm.losses``; ``ddm.experiment`` builds a process and its
objective from a method entry). :class:`DecoupledProcess` (DDM) and the VP-SDE and VE-SDE
(``ddm.baselines``) implement it and register under their params.yaml names (``ddm``, ``vp``,
``ve``) in ``ddm.names.PROCESSES``.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from ddm.families import HtFamily, get_family
from ddm.names import PROCESSES
from ddm.times import check_t, expand_t

__all__ = ["Process", "Prediction", "DecoupledProcess"]


class Prediction(NamedTuple):
    """What one network call says (:meth:`Process.predict`): the x0 estimate and the heads."""

    x0: Tensor
    heads: tuple[Tensor, ...]


class Process(abc.ABC):
    """A forward process as training and sampling use it: DDM (:class:`DecoupledProcess`), the
    VP-SDE and the VE-SDE (``ddm.baselines``). Every conversion between the process, the
    network and the data lives here, once:

    * ``prior_std`` / :meth:`prior_sample`: x at t = 1 ~ N(0, prior_std^2 I);
    * :meth:`draw`, :meth:`target`, :meth:`sample_xt`: the noise of x_t beyond t, the training
      target of each head, x_t ~ q(x_t | x0);
    * :meth:`heads`, :meth:`x0`, :meth:`predict`: a network call on x_t (with the process' input
      scaling) and the x0 estimate its outputs imply;
    * :meth:`head_channels`: the channels of the network's heads.

    The training objective (``ddm.losses``) and the process of a params.yaml method entry are
    built by ``ddm.experiment`` (``RECIPES``): the process knows no loss and no config.

    A subclass that sets ``name`` registers itself in ``ddm.names.PROCESSES`` under that
    params.yaml name (``process:``); ``label`` names it in the tables.
    """

    name: ClassVar[str]
    label: ClassVar[str | None] = None
    #: The heads of the network, in order (the first ``n_heads`` are required).
    head_names: ClassVar[tuple[str, ...]]
    n_heads: ClassVar[int] = 1
    #: Standard deviation of the prior at t = 1.
    prior_std: float = 1.0

    def __init_subclass__(cls, **kwargs):
        """Register a subclass that sets ``name`` (a subclass that inherits it is not registered)."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PROCESSES.register(cls.name, label=cls.label)(cls)

    # -- the prior and the forward process ---------------------------------------------------
    def prior_sample(self, rng, shape: Sequence[int]) -> Tensor:
        """x at t = 1, one per seed of ``rng`` (a ``ddm.sampling.SampleRNG``): (B, *shape)."""
        return rng.randn(shape) * self.prior_std

    def draw(self, x0: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The randomness of x_t beyond t: ``eps`` ~ N(0, I) shaped like x0 (DDM adds ``z``)."""
        return {"eps": torch.randn(x0.shape, generator=generator, device=x0.device)}

    @abc.abstractmethod
    def target(self, x0: Tensor, noise: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
        """What each required head regresses to, given x0 and :meth:`draw`'s noise."""

    @abc.abstractmethod
    def sample_xt(self, x0: Tensor, t: Tensor, target: tuple[Tensor, ...]) -> Tensor:
        """x_t ~ q(x_t | x0) with the noise that :meth:`target` holds."""

    # -- the network -------------------------------------------------------------------------
    def net_input(self, x: Tensor, t: Tensor) -> Tensor:
        """What the network sees of x_t (the baselines scale it)."""
        return x

    @abc.abstractmethod
    def head_channels(self, channels: int, n: int | None = None) -> list[int]:
        """Channels of the network's first ``n`` heads (default ``n_heads``; at most
        ``len(head_names)``), for data of ``channels`` channels."""

    def heads(self, net, x: Tensor, t: Tensor, n: int | None = None) -> tuple[Tensor, ...]:
        """The network's outputs at (x_t, t) as a tuple; at least ``n`` (default ``n_heads``)."""
        out = net(self.net_input(x, t), t)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        n = self.n_heads if n is None else n
        if len(out) < n:
            raise ValueError(f"the network returned {len(out)} head(s); process '{self.name}' needs {n} "
                             f"({', '.join(self.head_names[:n])})")
        return out

    @abc.abstractmethod
    def x0(self, x: Tensor, t: Tensor, heads: tuple[Tensor, ...], *, head: bool = False) -> Tensor:
        """The x0 estimate the heads imply at (x_t, t). ``head=True``: the estimate of a head
        that predicts x0 directly, where the network has one."""

    def predict(self, net, x: Tensor, t: Tensor, *, head: bool = False) -> Prediction:
        """One network call: (x0 estimate, heads) (:meth:`heads`, :meth:`x0`)."""
        heads = self.heads(net, x, t)
        return Prediction(self.x0(x, t, heads, head=head), heads)

    def alpha_sigma(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(alpha_t, sigma_t) of a Gaussian path x_t = alpha_t x0 + sigma_t eps; ValueError if
        the process is not one."""
        raise ValueError(f"process '{self.name}' is not a Gaussian path x_t = alpha_t x0 + sigma_t eps")


class DecoupledProcess(Process):
    """The decoupled forward process (Eq. 6-7) and its reverse transition (Eq. 9 / 11 / 28).

    Paper notation: from time t to t - s. We write s_next = t - s for the time stepped to, so
    grids need not be uniform:

        mean = x_t + H_{s_next}(phi) - H_t(phi) - (t - s_next)/sqrt(t) * eps      (Eq. 11)
        var  = (t - s_next) * s_next / t

    which is the Brownian-bridge posterior q(x_{s_next} | x_t, x0) with
    x0 = x_t - H_t(phi) - sqrt(t) eps (Eq. 20).

    The network has two heads, (phi, eps) (Eq. 10); its x0 estimate is Eq. 20 (both heads) or,
    with ``head=True``, the x0 head's own x0 = -H_1(phi).
    """

    name = "ddm"
    label = "DDM"
    head_names = ("phi", "eps")
    n_heads = 2

    def __init__(self, family: HtFamily | str = "constant", **family_options):
        self.family = get_family(family, **family_options) if isinstance(family, str) else family

    def head_channels(self, channels: int, n: int | None = None) -> list[int]:
        """Heads (phi, eps) (Eq. 10): phi holds ``n_params`` maps of the data's channels."""
        return [self.family.phi_channels(channels), channels][: self.n_heads if n is None else n]

    def draw(self, x0: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """eps ~ N(0, I) and, for a family with free parameters, z (App. B)."""
        noise = super().draw(x0, generator)
        z = self.family.draw_free(x0, generator)
        if z is not None:
            noise["z"] = z
        return noise

    def target(self, x0: Tensor, noise: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(phi, eps): phi solved from x0 and the free parameters z (App. B)."""
        z = noise.get("z")
        return self.family.solve(x0, None if z is None else z.to(x0)), noise["eps"].to(x0)

    def sample_xt(self, x0: Tensor, t: Tensor, target: tuple[Tensor, ...]) -> Tensor:
        phi, eps = target[:2]
        return self.q_sample(x0, t, eps, phi)

    def x0(self, x: Tensor, t: Tensor, heads: tuple[Tensor, ...], *, head: bool = False) -> Tensor:
        """x - H_t(phi) - sqrt(t) eps (Eq. 20); ``head=True``: -H_1(phi)."""
        phi, eps = heads[:2]
        return self.family.x0_from_phi(phi) if head else self.predict_x0(x, t, phi, eps)

    def alpha_sigma(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """h_t = c: x_t = (1 - t) x0 + sqrt(t) eps (alpha_1 = 0). Other families are no Gaussian
        path (H_t depends on free random parameters): ValueError."""
        if self.family.name != "constant":
            raise ValueError(
                f"the ODE solvers need a Gaussian path x_t = alpha_t x0 + sigma_t eps: h_t family "
                f"'{self.family.name}' is not one; use h_t = constant or the sampler 'ddm'"
            )
        return (lambda t: 1 - t), (lambda t: t.sqrt())

    def __repr__(self) -> str:
        return f"DecoupledProcess({self.family!r})"

    def marginal(self, x0: Tensor, phi: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean x0 + H_t(phi) and standard deviation sqrt(t) of q(x_t | x0) (Eq. 7)."""
        t = check_t(t, x0.shape[0]).to(x0)
        return x0 + self.family.H(phi, t), expand_t(t.sqrt(), x0)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor, phi: Tensor) -> Tensor:
        """x_t = x0 + H_t(phi) + sqrt(t) eps (Eq. 7 / Alg. 1 line 5)."""
        if eps.shape != x0.shape:
            raise ValueError(f"eps has shape {tuple(eps.shape)}; x0 has {tuple(x0.shape)}")
        mean, std = self.marginal(x0, phi, t)
        return mean + std * eps

    def predict_x0(self, x_t: Tensor, t: Tensor, phi: Tensor, eps: Tensor) -> Tensor:
        """x0 implied by both heads: x_t - H_t(phi) - sqrt(t) eps (Eq. 20)."""
        t = t.to(x_t)
        return x_t - self.family.H(phi, t) - expand_t(t.sqrt(), x_t) * eps

    def posterior(
        self, x_t: Tensor, t: Tensor, t_next: Tensor, phi: Tensor, eps: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean and std of q(x_{t_next} | x_t, x0) with phi and eps given (Eq. 11, 28)."""
        t, t_next = t.to(x_t), t_next.to(x_t)
        step = expand_t(t - t_next, x_t)
        mean = (
            x_t
            + self.family.H(phi, t_next)
            - self.family.H(phi, t)
            - step / expand_t(t.sqrt(), x_t) * eps
        )
        std = (step * expand_t(t_next, x_t) / expand_t(t, x_t)).clamp_min(0).sqrt()
        return mean, std


#: Type of a network as the samplers see it: (x_t, t) -> (first head, second head).
TwoHeadNet = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
