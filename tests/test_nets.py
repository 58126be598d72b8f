"""Tests for ddm.nets: the shared-encoder, multi-head U-Net (paper §B.2, Fig. 5, Table 5).

All nets are tiny (ch=16, resolution 8, two levels) so the module runs in a few seconds on CPU.
"""

from __future__ import annotations

import pytest
import torch

from ddm.nets import HEAD_TYPES, UNet, build_unet, count_parameters
from ddm.unet_layers import num_groups

R = 8
CH = 16
BATCH_TOL = 1e-5  # batch-independence tolerance (absolute, fp32, eval mode)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets are slower with several intra-op threads on a busy shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(**kw) -> UNet:
    cfg = dict(in_channels=3, out_channels=(3, 3), resolution=R, ch=CH, ch_mult=(1, 2),
               num_blocks=1, attn_resolutions=(4,), dropout=0.1)
    cfg.update(kw)
    return UNet(**cfg)


def randomize_outputs(model: UNet, seed: int = 123) -> UNet:
    """Output convs are zero-initialised; give them random weights so outputs are informative."""
    g = torch.Generator().manual_seed(seed)
    convs = [d.conv_out for d in model.decoders] + [h.conv2 for h in model.conv_heads]
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=g))
            conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=g))
    return model


def inputs(batch: int = 2, seed: int = 0, cond_channels: int | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, R, R, generator=g)
    t = torch.rand(batch, generator=g)
    cond = None if cond_channels is None else torch.randn(batch, cond_channels, R, R, generator=g)
    return x, t, cond


def n_params(model, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


# --- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEAD_TYPES)
@pytest.mark.parametrize("out_channels", [(3,), (3, 3), (6, 3), (1, 2, 5)])
def test_output_shapes(head, out_channels):
    torch.manual_seed(0)
    net = tiny(head=head, out_channels=out_channels)
    x, t, _ = inputs(batch=2)
    outs = net(x, t)
    assert isinstance(outs, tuple) and len(outs) == len(out_channels)
    for o, c in zip(outs, out_channels):
        assert o.shape == (2, c, R, R)


def test_three_levels_and_odd_width():
    torch.manual_seed(0)
    net = tiny(ch=24, ch_mult=(1, 2, 3), resolution=8, attn_resolutions=(4, 2), num_blocks=2)
    outs = net(*inputs(batch=2)[:2])
    assert [o.shape for o in outs] == [(2, 3, R, R)] * 2


def test_zero_initialised_outputs():
    torch.manual_seed(0)
    for head in HEAD_TYPES:
        net = tiny(head=head, out_channels=(3, 6))
        for o in net(*inputs()[:2]):
            assert torch.count_nonzero(o) == 0


def test_scalar_t_is_broadcast():
    torch.manual_seed(0)
    net = randomize_outputs(tiny()).eval()
    x, _, _ = inputs(batch=3)
    ref = net(x, torch.full((3,), 0.25))
    for t in (0.25, torch.tensor(0.25)):
        for a, b in zip(net(x, t), ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_output_depends_on_t():
    torch.manual_seed(0)
    net = randomize_outputs(tiny()).eval()
    x, _, _ = inputs()
    a, b = net(x, 0.1), net(x, 0.9)
    assert all(not torch.allclose(u, v) for u, v in zip(a, b))


# --- decoders: separate weights, shared encoder ---------------------------------------------

def test_decoders_have_separate_parameters():
    torch.manual_seed(0)
    net = randomize_outputs(tiny(out_channels=(3, 3))).eval()
    x, t, _ = inputs()
    ptrs0 = {p.data_ptr() for p in net.decoders[0].parameters()}
    ptrs1 = {p.data_ptr() for p in net.decoders[1].parameters()}
    assert not ptrs0 & ptrs1
    with torch.no_grad():
        base = net(x, t)
        # perturb an inner weight of decoder 1 only
        net.decoders[1].levels[0].blocks[0].conv1.weight.add_(0.5)
        after = net(x, t)
    torch.testing.assert_close(after[0], base[0], rtol=0, atol=0)
    assert (after[1] - base[1]).abs().max() > 1e-3
    with torch.no_grad():
        net.decoders[0].levels[-1].blocks[-1].conv2.weight.add_(0.5)
        after2 = net(x, t)
    assert (after2[0] - after[0]).abs().max() > 1e-3
    torch.testing.assert_close(after2[1], after[1], rtol=0, atol=0)
    with torch.no_grad():  # the shared encoder moves both heads
        net.encoder.conv_in.weight.add_(0.5)
        after3 = net(x, t)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(after3, after2))


def test_parameter_count_shared_plus_decoders():
    torch.manual_seed(0)
    two = tiny(out_channels=(3, 3))
    one = tiny(out_channels=(3,))
    dec = n_params(two, "decoders.0.")
    assert dec == n_params(two, "decoders.1.") > 0
    shared = count_parameters(two) - n_params(two, "decoders.")
    assert shared == n_params(two, "encoder.") + n_params(two, "time_embed.")
    assert count_parameters(two) == shared + 2 * dec
    # the single-decoder net is exactly the shared part plus one decoder
    assert count_parameters(one) == shared + dec
    # different out_channels: only the final 3x3 conv differs (9*ch weights + 1 bias per channel)
    mixed = tiny(out_channels=(6, 3))
    assert count_parameters(mixed) == shared + 2 * dec + 3 * (9 * CH + 1)


def test_conv_head_parameter_count():
    torch.manual_seed(0)
    single = tiny(out_channels=(3,), head="conv")
    assert count_parameters(single) == count_parameters(tiny(out_channels=(3,)))
    for extra in (3, 5):
        net = tiny(out_channels=(3, extra), head="conv")
        expected = (9 * CH * CH + CH) + (9 * CH * extra + extra)
        assert count_parameters(net) - count_parameters(single) == expected
    three = tiny(out_channels=(3, 3, 6), head="conv")
    assert count_parameters(three) - count_parameters(single) == (
        2 * (9 * CH * CH + CH) + (9 * CH * 3 + 3) + (9 * CH * 6 + 6))
    assert len(three.decoders) == 1


# --- condition ------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEAD_TYPES)
def test_condition_changes_outputs(head):
    torch.manual_seed(0)
    net = randomize_outputs(tiny(cond_channels=2, head=head)).eval()
    x, t, c1 = inputs(cond_channels=2, seed=1)
    _, _, c2 = inputs(cond_channels=2, seed=2)
    with torch.no_grad():
        a, a2, b = net(x, t, c1), net(x, t, c1.clone()), net(x, t, c2)
    for u, v in zip(a, a2):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    for u, w in zip(a, b):
        assert (u - w).abs().max() > 1e-4
    assert n_params(net, "cond_encoder.") > 0


def test_condition_reaches_every_decoder_level():
    torch.manual_seed(0)
    net = tiny(cond_channels=2)
    for dec in net.decoders:
        for k, level in enumerate(dec.levels):
            i = len(dec.levels) - 1 - k
            first = level.blocks[0].conv1.in_channels
            plain = tiny().decoders[0].levels[k].blocks[0].conv1.in_channels
            assert first - plain == net.cond_encoder.level_channels[i] == CH * net.ch_mult[i]


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(head="unet"), r"'unet'.*\['decoder', 'conv'\]"),
    (dict(resolution=10, ch_mult=(1, 2, 2)), r"resolution 10 .* = 4"),
    (dict(attn_resolutions=(4, 3)), r"\[3\] never occur.*\[8, 4\]"),
    (dict(out_channels=()), r"out_channels must not be empty, got \(\)"),
    (dict(out_channels=(3, 0)), r"out_channels.*\(3, 0\)"),
    (dict(ch_mult=()), r"ch_mult must not be empty"),
    (dict(num_blocks=0), r"num_blocks.*0"),
    (dict(dropout=1.5), r"dropout.*1\.5"),
    (dict(cond_channels=0), r"cond_channels.*0"),
])
def test_constructor_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny(**kwargs)


def test_forward_shape_errors():
    torch.manual_seed(0)
    net = tiny()
    x, t, _ = inputs(batch=2)
    msg = r"expected x of shape \(B, 3, 8, 8\), got \(2, 3, 16, 16\)"
    with pytest.raises(ValueError, match=msg):
        net(torch.zeros(2, 3, 16, 16), t)
    with pytest.raises(ValueError, match=r"expected x .* got \(2, 1, 8, 8\)"):
        net(torch.zeros(2, 1, 8, 8), t)
    with pytest.raises(ValueError, match=r"got \(3, 8, 8\)"):
        net(torch.zeros(3, 8, 8), t)
    with pytest.raises(ValueError, match=r"expected t of shape \(2,\).*got \(3,\)"):
        net(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected t of shape \(2,\).*got \(2, 1\)"):
        net(x, torch.zeros(2, 1))
    for bad in ("0.5", None, True):  # ddm.times.as_batch_t: the one time check of nets and process
        with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(2,\), got "):
            net(x, bad)


def test_t_as_float32_on_the_input_device():
    from ddm.times import as_batch_t

    t = as_batch_t(torch.tensor([0.5, 0.25], dtype=torch.float64), 2, device="cpu", dtype=torch.float32)
    assert t.dtype == torch.float32 and t.tolist() == [0.5, 0.25]
    assert as_batch_t(1, 3).tolist() == [1.0, 1.0, 1.0] and as_batch_t(1, 3).dtype == torch.float32
    out_of_range = as_batch_t(torch.tensor([2.0, -1.0]), 2)  # shape only: no look at the values
    assert out_of_range.tolist() == [2.0, -1.0]


def test_forward_cond_errors():
    torch.manual_seed(0)
    x, t, c = inputs(cond_channels=2)
    with pytest.raises(ValueError, match=r"cond_channels=None"):
        tiny()(x, t, c)
    net = tiny(cond_channels=2)
    with pytest.raises(ValueError, match=r"cond_channels=2.*\(2, 2, 8, 8\)"):
        net(x, t)
    msg = r"expected cond of shape \(2, 2, 8, 8\), got \(2, 3, 8, 8\)"
    with pytest.raises(ValueError, match=msg):
        net(x, t, torch.zeros(2, 3, 8, 8))


def test_build_unet():
    cfg = dict(in_channels=3, out_channels=[3, 3], resolution=R, ch=CH, ch_mult=[1, 2],
               num_blocks=1, attn_resolutions=[4], dropout=0.0, head="decoder")
    torch.manual_seed(0)
    net = build_unet(cfg)
    assert net.out_channels == (3, 3) and net.ch_mult == (1, 2)
    torch.manual_seed(0)
    ref = tiny(dropout=0.0)
    assert count_parameters(net) == count_parameters(ref)
    for (n1, p1), (n2, p2) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    with pytest.raises(ValueError, match=r"unknown UNet config keys \['channels'\]"):
        build_unet({**cfg, "channels": 3})
    with pytest.raises(ValueError, match=r"missing .*\['resolution'\]"):
        build_unet({k: v for k, v in cfg.items() if k != "resolution"})


# --- numerics ---------------------------------------------------------------------------

@pytest.mark.parametrize("head, cond", [("decoder", None), ("conv", None), ("decoder", 2)])
def test_batch_independence(head, cond):
    """Sample i of a batch of 8 equals that sample alone, within BATCH_TOL (eval mode)."""
    torch.manual_seed(0)
    net = randomize_outputs(tiny(head=head, cond_channels=cond)).eval()
    x, t, c = inputs(batch=8, seed=3, cond_channels=cond)
    with torch.no_grad():
        full = net(x, t, c)
        for i in (0, 5, 7):
            alone = net(x[i:i + 1], t[i:i + 1], None if c is None else c[i:i + 1])
            for f, a in zip(full, alone):
                torch.testing.assert_close(f[i:i + 1], a, rtol=0, atol=BATCH_TOL)


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_backward_finite(head):
    torch.manual_seed(0)
    net = randomize_outputs(tiny(head=head, cond_channels=2)).train()
    x, t, c = inputs(cond_channels=2)
    outs = net(x, t, c)
    sum(o.pow(2).mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert net.encoder.conv_in.weight.grad.abs().sum() > 0
    assert net.cond_encoder.conv_in.weight.grad.abs().sum() > 0


def test_zero_init_still_trains_output_layer():
    torch.manual_seed(0)
    net = tiny()
    x, t, _ = inputs()
    sum((o - 1).pow(2).mean() for o in net(x, t)).backward()
    for dec in net.decoders:
        assert dec.conv_out.weight.grad.abs().sum() > 0


def test_deterministic():
    torch.manual_seed(7)
    a = tiny(cond_channels=2)
    torch.manual_seed(7)
    b = tiny(cond_channels=2)
    for (n1, p1), (n2, p2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    net = randomize_outputs(a).eval()
    x, t, c = inputs(cond_channels=2)
    with torch.no_grad():
        o1, o2 = net(x, t, c), net(x, t, c)
    for u, v in zip(o1, o2):
        assert torch.equal(u, v)
    net.train()  # dropout active: two train-mode calls differ
    with torch.no_grad():
        assert not torch.equal(net(x, t, c)[0], net(x, t, c)[0])


def test_bf16_autocast_cpu():
    torch.manual_seed(0)
    net = randomize_outputs(tiny(cond_channels=2)).eval()
    x, t, c = inputs(cond_channels=2)
    with torch.no_grad():
        ref = net(x, t, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = net(x, t, c)
    for o, r in zip(outs, ref):
        assert o.shape == r.shape and torch.isfinite(o).all()
        assert (o.float() - r).abs().max() < 0.1 * r.abs().max() + 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    net = randomize_outputs(tiny(cond_channels=2)).eval()
    x, t, c = inputs(cond_channels=2)
    with torch.no_grad():
        ref = net(x, t, c)
        gpu = net.cuda()(x.cuda(), t.cuda(), c.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = net(x.cuda(), t.cuda(), c.cuda())
    for g, r, h in zip(gpu, ref, half):
        torch.testing.assert_close(g.cpu(), r, rtol=1e-3, atol=1e-4)
        assert torch.isfinite(h).all()


def test_num_groups():
    assert [num_groups(c) for c in (32, 64, 192, 16, 24, 48, 40, 3, 1)] == \
        [32, 32, 32, 16, 24, 24, 20, 3, 1]
    net = tiny(ch=24)
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_groups <= 32
