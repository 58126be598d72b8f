"""Training objectives: Eq. 10 with the weights of Table 5, the baselines' eps loss."""

import math

import pytest
import torch
from torch import nn

from ddm.baselines import VPSDE
from ddm.losses import DDMObjective, VPObjective, weights
from ddm.process import DecoupledProcess


class Affine(nn.Module):
    """A tiny two-head 'network' whose outputs are easy to compute by hand."""

    def __init__(self, phi_channels=1):
        super().__init__()
        self.k = phi_channels

    def forward(self, x, t):
        tt = t.reshape(-1, 1, 1, 1)
        return torch.cat([0.5 * x + tt] * self.k, 1), -x * tt


def test_weights_of_table5():
    t = torch.tensor([0.25, 0.5, 0.9])
    l1, l2 = weights("unit", t)
    assert l1.tolist() == [1, 1, 1] and l2.tolist() == [1, 1, 1]
    l1, l2 = weights("inverse", t, 1e-4)
    torch.testing.assert_close(l1, 1 / t)
    torch.testing.assert_close(l2, 1 / (1 - t + 1e-4))
    l1, l2 = weights("exp", t)
    torch.testing.assert_close(l1, t.exp())
    torch.testing.assert_close(l2, (1 - t).exp())
    # 1/(1-t) stays finite at the largest t a float can draw
    _, l2 = weights("inverse", torch.tensor([1.0]), 1e-4)
    assert l2.item() == pytest.approx(1e4)
    with pytest.raises(ValueError, match="valid names: authors_v2, exp, inverse, unit"):
        weights("sigmoid", t)


def test_ddm_loss_equals_hand_computed_value():
    x0 = torch.tensor([[[[0.5, -1.0]]], [[[0.0, 0.25]]]])  # (2, 1, 1, 2)
    noise = {"t": torch.tensor([0.25, 0.64]), "eps": torch.tensor([[[[1.0, -2.0]]], [[[0.5, 0.0]]]])}
    obj = DDMObjective(DecoupledProcess("constant"), weighting="inverse", t_min=1e-4)
    loss, terms = obj(Affine(), x0, noise)
    expected = []
    for i in range(2):
        t = noise["t"][i].item()
        xs, es = x0[i].flatten().tolist(), noise["eps"][i].flatten().tolist()
        xt = [(1 - t) * a + math.sqrt(t) * e for a, e in zip(xs, es)]  # x0 + c t + sqrt(t) eps, c = -x0
        phi_err = sum((0.5 * v + t - (-a)) ** 2 for v, a in zip(xt, xs)) / 2
        eps_err = sum((-v * t - e) ** 2 for v, e in zip(xt, es)) / 2
        expected.append(phi_err / t + eps_err / (1 - t + 1e-4))
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert set(terms) == {"phi", "eps"}


@pytest.mark.parametrize("family", ["constant", "linear", "quadratic", "exp", "sin"])
@pytest.mark.parametrize("weighting", ["unit", "inverse", "exp", "authors_v2"])
def test_weights_are_per_sample(family, weighting):
    """The loss of a batch is the stack of the losses of its samples alone: a (B,) x (B, 1)
    broadcast (the authors' extra-term bug) would give (B, B) and fail here."""
    proc = DecoupledProcess(family)
    obj = DDMObjective(proc, weighting=weighting, recon_weight=0.5)
    torch.manual_seed(0)
    x0 = torch.rand(5, 2, 3, 3) * 1.4 - 0.7
    noise = obj.draw(x0, torch.Generator().manual_seed(1))
    model = Affine(proc.family.n_params)
    loss, terms = obj(model, x0, noise)
    assert loss.shape == (5,) and all(v.shape == (5,) for v in terms.values())
    alone = torch.cat([obj(model, x0[i : i + 1], {k: v[i : i + 1] for k, v in noise.items()})[0] for i in range(5)])
    torch.testing.assert_close(loss, alone)
    assert len(set(noise["t"].tolist())) == 5  # distinct t per sample, so distinct weights


def test_draw_and_options():
    obj = DDMObjective(DecoupledProcess("quadratic"), t_min=0.3)
    x0 = torch.zeros(1000, 1, 2, 2)
    noise = obj.draw(x0, torch.Generator().manual_seed(0))
    assert noise["t"].min() >= 0.3 and noise["t"].max() < 1
    assert noise["z"].shape == (1000, 2, 2, 2) and "z" not in DDMObjective(DecoupledProcess("constant")).draw(x0)
    for kw, msg in [({"weighting": "x"}, "unknown weighting"), ({"loss_type": "huber"}, "unknown loss type 'huber'; valid: l2, l1"),
                    ({"t_min": 0.0}, "t_min must lie in"), ({"reduction": "max"}, "unknown reduction")]:
        with pytest.raises(ValueError, match=msg):
            DDMObjective(DecoupledProcess("constant"), **kw)
    with pytest.raises(ValueError, match="returned 1 head"):
        DDMObjective(DecoupledProcess("constant"))(lambda x, t: x, x0[:2], obj.draw(x0[:2]) | {"z": None})


def test_l1_and_sum_reduction():
    x0 = torch.zeros(1, 1, 1, 2)
    noise = {"t": torch.tensor([0.5]), "eps": torch.tensor([[[[1.0, -1.0]]]])}
    net = lambda x, t: (torch.zeros_like(x), torch.zeros_like(x))  # noqa: E731
    l1, _ = DDMObjective(DecoupledProcess("constant"), weighting="unit", loss_type="l1", reduction="sum")(net, x0, noise)
    assert l1.item() == pytest.approx(2.0)  # |0 - 0| * 2 + |0 - 1| + |0 + 1|
    l2, _ = DDMObjective(DecoupledProcess("constant"), weighting="unit")(net, x0, noise)
    assert l2.item() == pytest.approx(1.0)


def test_vp_objective_with_x0_branch():
    sde = VPSDE()
    x0 = torch.tensor([[[[0.5]]]])
    noise = {"t": torch.tensor([0.5]), "eps": torch.tensor([[[[2.0]]]])}
    xt = sde.alpha(torch.tensor(0.5)) * 0.5 + sde.sigma(torch.tensor(0.5)) * 2.0
    net = lambda x, t: (x, 2 * x)  # noqa: E731
    loss, terms = VPObjective(sde, x0_branch=True)(net, x0, noise)
    assert terms["eps"].item() == pytest.approx((xt.item() - 2.0) ** 2, rel=1e-6)
    assert terms["x0"].item() == pytest.approx((2 * xt.item() - 0.5) ** 2, rel=1e-6)
    assert loss.item() == pytest.approx(terms["eps"].item() + terms["x0"].item(), rel=1e-6)
