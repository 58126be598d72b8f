"""The conditioned U-Net (ddm.conditioning): the condition reaches both heads through
cross-attention, a conditioned DDM and a conditioned DDPM train with the real trainer and sample
with the unchanged samplers at 5 NFE, and the Swin-B encoder's weights file is explicit."""

from __future__ import annotations

import pytest
import torch

from ddm import tasks
from ddm.baselines import VPSDE
from ddm.sde_samplers import sample_vp_em, sde_grid
from ddm.conditioning import ConditionedObjective, CondUNet, bind, build_cond_unet, pack, position_embedding
from ddm.io import MissingWeightsError
from ddm.losses import DDMObjective, VPObjective
from ddm.process import DecoupledProcess
from ddm.sampling import SampleRNG, sample_ddm, uniform_grid
from ddm.swin import SWIN_B_URL
from ddm.training import TrainConfig, load_checkpoint, train

TINY = dict(in_channels=1, out_channels=(1, 1), resolution=8, ch=16, ch_mult=(1, 2),
            num_blocks=1, attn_resolutions=(4,), dropout=0.0)


def _tiny(**kw) -> CondUNet:
    torch.manual_seed(0)
    return CondUNet(cond_channels=2, **{**TINY, **kw})


def _randomise_outputs(net: CondUNet) -> None:
    """The output convolutions start at zero (every head is 0 at init): give them weights."""
    g = torch.Generator().manual_seed(1)
    for dec in net.unet.decoders:
        dec.conv_out.weight.data = torch.randn(dec.conv_out.weight.shape, generator=g) * 0.1


def test_condition_reaches_both_decoders_through_cross_attention():
    net = _tiny().eval()
    _randomise_outputs(net)
    assert len(net.cross) == 2 and all(set(c) == {"0", "1"} for c in net.cross)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    c1, c2 = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        a, a_again, b = net(x, t, cond=c1), net(x, t, cond=c1), net(x, t, cond=c2)
    for head in range(2):  # phi and eps decoders both see the condition
        assert torch.equal(a[head], a_again[head])
        assert (a[head] - b[head]).abs().max() > 1e-4
    # without the cross-attention blocks the condition has no path to the output
    for blocks in net.cross:
        for blk in blocks.values():
            torch.nn.init.zeros_(blk.proj.weight)
            torch.nn.init.zeros_(blk.proj.bias)
    with torch.no_grad():
        a, b = net(x, t, cond=c1), net(x, t, cond=c2)
    assert all(torch.equal(a[h], b[h]) for h in range(2))


def test_cross_attention_only_at_the_chosen_levels_and_bad_inputs():
    net = _tiny(cross_attn_resolutions=(4,))
    assert all(set(c) == {"1"} for c in net.cross)
    with pytest.raises(ValueError, match=r"resolutions \[16\] must be a non-empty subset"):
        _tiny(cross_attn_resolutions=(16,))
    with pytest.raises(ValueError, match="unknown condition encoder 'vit'; valid encoders"):
        _tiny(encoder="vit")
    with pytest.raises(ValueError, match=r"needs cond of shape \(2, 2, 8, 8\).*bind"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r"unknown conditioned-UNet config keys \['colour'\]"):
        build_cond_unet({**TINY, "cond_channels": 2, "colour": 1})
    built = build_cond_unet({**TINY, "cond_channels": 2, "ch_mult": [1, 2]})
    assert built.out_channels == (1, 1) and built.resolution == 8


def test_concat_conditioning_reaches_both_decoders_without_cross_attention():
    """§B.2's reading (``conditioning="concat"``): the U-Net's own condition path, its conv
    encoder's features concatenated to every decoder level; no cross-attention block."""
    net = _tiny(conditioning="concat").eval()
    _randomise_outputs(net)
    assert len(net.cross) == 0 and net.unet.cond_encoder is not None and not hasattr(net, "cond_encoder")
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    c1, c2 = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        a, b = net(x, t, cond=c1), net(x, t, cond=c2)
        direct = net.unet(x, t, c1)
    for head in range(2):
        assert (a[head] - b[head]).abs().max() > 1e-4
        assert torch.equal(a[head], direct[head])
    built = build_cond_unet({**TINY, "cond_channels": 2, "conditioning": "concat"})
    assert built.conditioning == "concat" and built.state_dict().keys() == net.state_dict().keys()
    with pytest.raises(ValueError, match=r"needs cond of shape \(2, 2, 8, 8\)"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    for bad, named in (({"encoder": "swin_b"}, "encoder='swin_b'"), ({"cross_attn_resolutions": (4,)}, "cross_attn_resolutions"),
                       ({"cond_resolution": 16}, "cond_resolution=16")):
        with pytest.raises(ValueError, match=f"conditioning 'concat'.*takes no {named}"):
            _tiny(conditioning="concat", **bad)
    with pytest.raises(ValueError, match=r"unknown conditioning 'sum'; valid values are \['cross_attention', 'concat'\]"):
        _tiny(conditioning="sum")


def test_position_embedding_identifies_each_position():
    pe = position_embedding(8, 8, 32, max_freq=4.0)
    assert pe.shape == (64, 32)
    # each position's embedding is most similar to itself: attention can align positions
    assert torch.equal((pe @ pe.T).argmax(dim=1), torch.arange(64))
    # it depends on the normalised position only: a 4x4 grid's position (r, c) is closest to
    # one of the four 8x8 positions it covers, (2r or 2r+1, 2c or 2c+1)
    coarse = position_embedding(4, 4, 32, max_freq=4.0)
    best = (coarse @ pe.T).argmax(dim=1)
    rows, cols = torch.arange(16) // 4, torch.arange(16) % 4
    assert torch.equal(best // 8 // 2, rows) and torch.equal(best % 8 // 2, cols)


def test_conditioned_ddm_trains_and_samples_at_5_nfe(tmp_path):
    data = tasks.inpainting_task("train", n=32, size=8, seed=0)
    packed = pack(data["target"], data["cond"])
    assert packed.shape == (32, 3, 8, 8)
    proc = DecoupledProcess("constant")
    net = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, ckpt_every=100, log_every=2, ema_decay=0.5)
    ckpt = train(net, ConditionedObjective(DDMObjective(proc), target_channels=1), packed, cfg,
                 tmp_path / "ddm")
    load_checkpoint(ckpt, net)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("cross.") for k in changed)
    assert any(k.startswith("cond_encoder.") for k in changed)

    test = tasks.inpainting_task("test", n=6, size=8, seed=0)
    calls = []

    def counted(x, t):
        calls.append(1)
        return bind(net.eval(), test["cond"])(x, t)

    rng = SampleRNG(seeds=range(6))
    x = sample_ddm(counted, proc, rng.randn((1, 8, 8)), uniform_grid(5), rng=rng)
    assert len(calls) == 5 and x.shape == (6, 1, 8, 8) and torch.isfinite(x).all()
    rng = SampleRNG(seeds=range(6))
    other = sample_ddm(bind(net, test["cond"].flip(0)), proc, rng.randn((1, 8, 8)),
                       uniform_grid(5), rng=rng)
    assert (other - x).abs().max() > 1e-6  # the sample follows the condition


def test_conditioned_ddpm_baseline_same_backbone(tmp_path):
    data = tasks.saliency_task("train", n=16, size=8, seed=0)
    sde = VPSDE()
    torch.manual_seed(0)
    net = CondUNet(cond_channels=3, **{**TINY, "out_channels": (1,)})
    cfg = TrainConfig(steps=2, batch_size=8, lr=1e-3, ckpt_every=100, log_every=1)
    train(net, ConditionedObjective(VPObjective(sde), 1), pack(data["target"], data["cond"]),
          cfg, tmp_path / "vp")
    cond = data["cond"][:4]
    rng = SampleRNG(seeds=range(4))
    x = sample_vp_em(bind(net.eval(), cond), sde, rng.randn((1, 8, 8)), sde_grid(5), rng=rng)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_conditioned_objective_refuses_unpacked_data():
    obj = ConditionedObjective(DDMObjective(DecoupledProcess("constant")), target_channels=1)
    with pytest.raises(ValueError, match=r"packed data must be \(B, 1 \+ condition channels"):
        obj.draw(torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="need the same count and size"):
        pack(torch.zeros(4, 1, 8, 8), torch.zeros(4, 3, 4, 4))


def test_missing_swin_b_weights_is_one_clear_error(tmp_path):
    missing = tmp_path / "swin_b-68c6b09e.pth"
    with pytest.raises(MissingWeightsError) as err:
        _tiny(encoder="swin_b", encoder_weights=missing)
    msg = str(err.value)
    assert str(missing) in msg and SWIN_B_URL in msg and "\n" not in msg
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="bad.pth is not torchvision's Swin-B state dict"):
        _tiny(encoder="swin_b", encoder_weights=bad)


@pytest.mark.slow
def test_swin_b_encoder_from_a_local_file(tmp_path):
    from torchvision.models import swin_b

    path = tmp_path / "swin_b.pth"
    torch.manual_seed(0)
    state = swin_b(weights=None).state_dict()
    torch.save(state, path)
    del state
    net = CondUNet(cond_channels=3, encoder="swin_b", encoder_weights=path,
                   **{**TINY, "resolution": 32, "attn_resolutions": (16,)})
    assert torch.equal(net.cond_encoder.backbone[0][0].weight,
                       torch.load(path, weights_only=True)["features.0.0.weight"])
    assert net.cond_encoder.stage_of_level == [0, 0]  # strides 1, 2 -> Swin's stride-4 stage
    with torch.no_grad():
        feats = net.cond_encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
        out = net(torch.randn(2, 1, 32, 32), torch.rand(2), cond=torch.rand(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 32, 16, 16)]
    assert [tuple(o.shape) for o in out] == [(2, 1, 32, 32)] * 2


def test_condition_in_pixel_space_beside_a_latent_x_t():
    """Latent diffusion (§5.1): x_t is 4x smaller than the condition; the encoder and the
    cross-attention take it, and the condition travels with the data space-to-depth."""
    net = _tiny(cond_resolution=32).eval()
    _randomise_outputs(net)
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    c1, c2 = torch.randn(2, 2, 32, 32), torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        a, b = net(x, t, cond=c1), net(x, t, cond=c2)
    assert a[0].shape == (2, 1, 8, 8) and (a[0] - b[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"needs cond of shape \(2, 2, 32, 32\)"):
        net(x, t, cond=torch.zeros(2, 2, 8, 8))
    packed = pack(x, c1, 4)
    assert packed.shape == (2, 1 + 2 * 16, 8, 8)
    obj = ConditionedObjective(DDMObjective(DecoupledProcess("constant")), target_channels=1, cond_factor=4)
    x0, cond = obj.split(packed)
    assert torch.equal(x0, x) and torch.equal(cond, c1)
    with pytest.raises(ValueError, match="need the same count and size"):
        pack(x, c1, 2)


@pytest.mark.parametrize("task", ["saliency", "super_resolution", "inpainting"])
def test_packed_split_rows_equal_the_packed_tensor_and_train_the_same(task, tmp_path):
    """Training reads a task's rows per batch from its uint8 fields (ddm.conditioned.PackedSplit,
    a quarter of float32's memory): the rows, and 3 training steps on them, equal the eager tensor."""
    from ddm.conditioned import PackedSplit, make_split
    from ddm.tasks import model_tensors

    data = {"saliency": {"size": 16}, "super_resolution": {"size": 16, "scale": 4},
            "inpainting": {"size": 8}}[task]
    split = make_split(task, "train", {**data, "n_train": 24, "n_test": 4, "seed": 0})
    m = model_tensors(task, split)
    eager = pack(m["target"], m["cond"])
    lazy = PackedSplit(task, split)
    assert lazy.shape == eager.shape and lazy.dtype == eager.dtype and len(lazy) == 24
    idx = torch.tensor([5, 0, 23, 5])
    assert torch.equal(lazy[idx], eager[idx])
    z = torch.randn(24, 3, data["size"] // 2, data["size"] // 2)  # a latent target (§5.1), factor 2
    assert torch.equal(PackedSplit(task, split, z, 2)[idx], pack(z, m["cond"], 2)[idx])

    target_channels, cond_channels = m["target"].shape[1], m["cond"].shape[1]
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, ckpt_every=100, log_every=1, ema_decay=0.5)
    states = []
    for i, d in enumerate((eager, lazy)):
        torch.manual_seed(0)
        net = CondUNet(cond_channels=cond_channels, **{**TINY, "in_channels": target_channels,
                                                       "out_channels": (target_channels,) * 2,
                                                       "resolution": data["size"], "attn_resolutions": ()})
        ckpt = train(net, ConditionedObjective(DDMObjective(DecoupledProcess("constant")), target_channels),
                     d, cfg, tmp_path / str(i))
        states.append(load_checkpoint(ckpt, net)["model"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_latent_training_data_is_encoded_in_chunks_as_in_one_call():
    """A latent task's training data (§5.1): its targets are encoded 256 at a time from the uint8
    fields (no float copy of the whole split), with the same latents as one encode_images call."""
    from ddm.autoencoder import KLAutoencoder, encode_images
    from ddm.conditioned import make_split, training_data
    from ddm.tasks import model_tensors

    split = make_split("super_resolution", "train", {"size": 16, "scale": 4, "n_train": 300, "n_test": 4, "seed": 0})
    torch.manual_seed(0)
    ae = KLAutoencoder(ch=8).eval()
    data = training_data({"task": "super_resolution", "latent": {}, "cond_resolution": 16, "resolution": 4}, split, ae)
    m = model_tensors("super_resolution", split)
    expected = pack(encode_images(ae, m["target"]), m["cond"], 4)
    idx = torch.tensor([0, 255, 256, 299])
    assert data.shape == expected.shape and torch.equal(data[idx], expected[idx])
