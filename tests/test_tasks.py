"""The conditioned tasks' data (ddm.tasks): bicubic resizing and masks against hand-computed
cases, seeding, and the trivial references of Table 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddm import masks, tasks
from ddm.metrics import mae


# -- bicubic (MATLAB imresize) --------------------------------------------------------------------
def test_cubic_kernel_hand_values():
    # Keys, a = -0.5: (a+2)|x|^3 - (a+3)|x|^2 + 1 on [0, 1]; a|x|^3 - 5a|x|^2 + 8a|x| - 4a on [1, 2)
    got = tasks.cubic(np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5]))
    np.testing.assert_array_equal(got, [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])


def test_bicubic_down_x4_impulse_is_hand_computed():
    # Output pixel 1 samples input position (1 + 0.5) * 4 - 0.5 = 5.5; input pixel 5 lies 0.5
    # away, the x4 kernel is cubic(d / 4) / 4 and its taps sum to 1, so the weight is
    # cubic(0.125) / 4 = (1.5 * 0.125^3 - 2.5 * 0.125^2 + 1) / 4 = 0.240966796875.
    assert tasks.resize_matrix(16, 4)[1, 5] == 0.240966796875
    hr = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    hr[0, 0, 5, 5] = 255
    lr_float = tasks.imresize(hr, (4, 4))
    assert lr_float[0, 0, 1, 1].item() == pytest.approx(255 * 0.240966796875**2, abs=1e-12)
    lr = tasks.bicubic_down(hr, 4)
    assert lr.dtype == torch.uint8 and lr.shape == (1, 1, 4, 4)
    assert lr[0, 0, 1, 1].item() == 15  # round(14.806...)


def test_bicubic_down_reproduces_linear_ramps_and_constants():
    ramp = torch.arange(32, dtype=torch.float64).expand(32, 32)
    out = tasks.imresize(ramp, (8, 8))
    # interior columns (kernel support inside the image): exactly (i + 0.5) * 4 - 0.5
    torch.testing.assert_close(out[:, 2:6], torch.tensor([9.5, 13.5, 17.5, 21.5],
                                                         dtype=torch.float64).expand(8, 4),
                               rtol=0, atol=1e-12)
    const = torch.full((3, 20, 12), 77.0)
    torch.testing.assert_close(tasks.imresize(const, (5, 3)), torch.full((3, 5, 3), 77.0,
                               dtype=torch.float64), rtol=0, atol=1e-12)
    # inside the image the weights are torch's anti-aliased bicubic (also a = -0.5)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(tasks.imresize(x, (8, 8))[..., 2:6, 2:6], ref[..., 2:6, 2:6])


def test_bicubic_refuses_a_size_that_the_scale_does_not_divide():
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        tasks.bicubic_down(torch.zeros(1, 3, 30, 32, dtype=torch.uint8), 4)


# -- super-resolution -----------------------------------------------------------------------------
def test_sr_task_is_seeded_split_by_photo_and_consistent():
    assert not set(tasks.SR_TRAIN_PHOTOS) & set(tasks.SR_TEST_PHOTOS)
    a = tasks.sr_task("test", n=6, size=16, seed=3)
    b = tasks.sr_task("test", n=3, size=16, seed=3)
    c = tasks.sr_task("test", n=3, size=16, seed=4)
    assert a["target"].shape == a["cond"].shape == (6, 3, 16, 16)
    assert a["lr_uint8"].shape == (6, 3, 4, 4)
    assert torch.equal(a["hr_uint8"][:3], b["hr_uint8"])  # example i does not depend on n
    assert not torch.equal(b["hr_uint8"], c["hr_uint8"])
    assert torch.equal(a["lr_uint8"], tasks.bicubic_down(a["hr_uint8"], 4))
    assert torch.equal(a["cond_uint8"], tasks.bicubic_up(a["lr_uint8"], 4))
    assert a["hr_uint8"].double().std(dim=(1, 2, 3)).min() >= tasks.MIN_PATCH_STD - 1
    assert a["target"].min() >= -1 and a["target"].max() <= 1
    ref = tasks.bicubic_psnr(tasks.sr_task("test", n=32, size=32))
    assert 25 < ref < 45  # finite: no flat patch


# -- saliency -------------------------------------------------------------------------------------
def test_saliency_task_mask_is_the_pasted_object():
    s = tasks.saliency_task("train", n=12, size=32, seed=1)
    assert s["target"].shape == (12, 1, 32, 32) and s["cond"].shape == (12, 3, 32, 32)
    assert set(s["target"].unique().tolist()) <= {-1.0, 1.0}
    for img, m in zip(s["image_uint8"], s["mask_uint8"][:, 0].bool()):
        assert 0 < m.sum() < m.numel()
        inside = img[:, m]  # one colour inside the object
        assert torch.equal(inside, inside[:, :1].expand_as(inside))
    again = tasks.saliency_task("train", n=4, size=32, seed=1)
    assert torch.equal(again["image_uint8"], s["image_uint8"][:4])
    assert not torch.equal(tasks.saliency_task("test", n=4, size=32, seed=1)["image_uint8"],
                           again["image_uint8"])
    frac = s["mask_uint8"].double().mean().item() / 255
    assert tasks.all_background_mae(s["mask_uint8"]) == pytest.approx(frac)
    assert mae(s["mask_uint8"], s["mask_uint8"]) == 0.0


# -- inpainting masks (LaMa) ----------------------------------------------------------------------
def test_draw_stroke_hand_computed():
    # a width-3 stroke from (x, y) = (2, 2) to (6, 2): pixel centres within 1.5 of the segment.
    # Row 2: columns 1..7 (distance 1 at the caps); rows 1 and 3: columns 1..7 (corner
    # distance sqrt(2) <= 1.5); rows 0 and 4: distance 2 > 1.5.
    m = np.zeros((8, 8), bool)
    masks.draw_stroke(m, (2.0, 2.0), (6.0, 2.0), 3.0)
    want = np.zeros((8, 8), bool)
    want[1:4, 1:8] = True
    np.testing.assert_array_equal(m, want)
    thin = np.zeros((5, 5), bool)
    masks.draw_stroke(thin, (0.0, 0.0), (4.0, 4.0), 0.1)  # half-width floored at 0.5: the diagonal
    np.testing.assert_array_equal(thin, np.eye(5, dtype=bool))


def test_masks_are_seeded_per_index_and_lama_sized():
    a = masks.inpainting_masks(40, 64, seed=0)
    assert a.shape == (40, 1, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(masks.inpainting_masks(10, 64, seed=0), a[:10])
    assert not torch.equal(masks.inpainting_masks(10, 64, seed=1), a[:10])
    frac = a.double().mean(dim=(1, 2, 3))
    assert frac.min() > 0 and frac.max() < 1
    assert 0.15 < frac.mean() < 0.55  # LaMa's CelebA masks cover about a third of the image
    # boxes keep LaMa's 10/256 margin: no box touches the border, strokes may
    rng = np.random.default_rng(5)
    box = masks._boxes(rng, 64, masks.LAMA_CELEBA["box"], 64 / 256)
    border = np.ones_like(box)
    border[2:-2, 2:-2] = False
    assert box.any() and not (box & border).any()


def test_inpainting_task_and_mean_fill_reference():
    t = tasks.inpainting_task("test", n=20, size=8, seed=0)
    assert t["target"].shape == (20, 1, 8, 8) and t["cond"].shape == (20, 2, 8, 8)
    holes = t["mask"].bool()
    assert torch.equal(masks.inpainting_masks(20, 8, seed=0), t["mask"])
    assert torch.all(t["cond"][:, :1][holes] == 0)
    assert torch.equal(t["cond"][:, :1][~holes], t["target"][~holes])
    assert torch.equal(t["cond"][:, 1:], t["mask"].float() * 2 - 1)
    # mean_fill by hand: holes take round(mean), the rest is untouched
    img = torch.tensor([[[[10, 20], [30, 40]]]], dtype=torch.uint8)
    mask = torch.tensor([[[[1, 0], [0, 1]]]], dtype=torch.uint8)
    filled = tasks.mean_fill(img, mask, [100.4])
    assert filled.tolist() == [[[[100, 20], [30, 100]]]]
    ref = tasks.mean_fill(t["image_uint8"], t["mask"], t["mean"])
    assert torch.equal(ref[~holes], t["image_uint8"][~holes])


def test_bad_split_and_size_are_one_clear_line():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        tasks.sr_task("val")
    with pytest.raises(ValueError, match="size must be a positive multiple of 4, got 30"):
        tasks.saliency_task("train", n=2, size=30)
