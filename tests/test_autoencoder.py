"""The KL autoencoder for latent DDM (ddm.autoencoder): shapes and the stored latent scale, the
KL term by hand, and a short real training run whose reconstruction error is recorded."""

from __future__ import annotations

import pytest
import torch

from ddm.io import load_torch
from ddm import tasks
from ddm.autoencoder import LOGVAR_INIT, AutoencoderObjective, KLAutoencoder, fit_autoencoder, reconstruction_psnr
from ddm.config import LATENT_DEFAULTS
from ddm.training import TrainConfig, load_checkpoint, train


def _tiny(**kw) -> KLAutoencoder:
    torch.manual_seed(0)
    return KLAutoencoder(**{"ch": 8, **kw})


def test_round_trip_shapes_factor_4_and_stored_scale():
    ae = _tiny(z_channels=3).eval()
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (5, 3, 4, 4) and ae.factor == 4
        assert ae.decode(z).shape == x.shape
        scale = ae.fit_scale(x)
        assert scale == pytest.approx(1 / ae.posterior(x)[0].std().item(), rel=1e-6)
        assert ae.encode(x).std().item() == pytest.approx(1.0, rel=1e-5)
        torch.testing.assert_close(ae.decode(ae.encode(x)), ae.decoder(ae.posterior(x)[0]))
    restored = _tiny(z_channels=3)
    restored.load_state_dict(ae.state_dict())  # the scale travels with the weights
    assert restored.scale_factor.item() == pytest.approx(scale)
    with pytest.raises(ValueError, match=r"H, W divisible by 4, got \(1, 3, 18, 16\)"):
        ae.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"decode expects latents \(B, 3, h, w\)"):
        ae.decode(torch.zeros(1, 4, 4, 4))


def test_kl_term_by_hand():
    ae = _tiny(z_channels=4)
    x = torch.zeros(2, 3, 8, 8)
    mean, logvar = ae.posterior(x)
    assert torch.allclose(logvar.mean(), torch.tensor(LOGVAR_INIT), atol=1.0)
    _, kl = ae(x)
    want = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    torch.testing.assert_close(kl, want)
    # KL(N(0, 1) || N(0, 1)) = 0 and KL(N(m, 1) || N(0, 1)) = m^2 / 2 per element
    head = ae.encoder.body[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[:4] = 2.0
    _, kl = ae(x)
    torch.testing.assert_close(kl, torch.full((2,), 0.5 * 4.0 * 4 * 2 * 2))


def test_trains_in_few_steps_and_records_reconstruction_psnr(tmp_path, record_property):
    data = tasks.sr_task("train", n=64, size=16, seed=0)["target"]
    test = tasks.sr_task("test", n=32, size=16, seed=0)["target"]
    ae = _tiny(z_channels=4)
    before = reconstruction_psnr(ae.eval(), test)
    cfg = TrainConfig(steps=40, batch_size=8, lr=2e-3, lr_min=2e-4, weight_decay=0.0,
                      ckpt_every=1000, log_every=10, ema_decay=0.9)
    ckpt = train(ae.train(), AutoencoderObjective(ae), data, cfg, tmp_path / "ae")
    load_checkpoint(ckpt, ae)
    ae.eval().fit_scale(data)
    after = reconstruction_psnr(ae, test)
    record_property("ae_reconstruction_psnr_db", round(after, 2))
    record_property("ae_initial_psnr_db", round(before, 2))
    assert after > before + 3, (before, after)  # measured: 11.2 -> 17.7 dB


def test_latent_accum_trains_the_same_autoencoder_in_smaller_passes(tmp_path):
    """A latent block's ``accum`` (the paper preset's way onto one 80 GB card) reaches the trainer:
    the batch in accum passes gives the weights of one pass (float rounding aside) and the
    checkpoint records it."""
    data = tasks.sr_task("train", n=32, size=16, seed=0)["target"]
    latent = {**LATENT_DEFAULTS, "ch": 8, "steps": 3, "batch_size": 8}
    one = fit_autoencoder(latent, 3, data, tmp_path / "one")
    four = fit_autoencoder({**latent, "accum": 4}, 3, data, tmp_path / "four")
    assert load_checkpoint(next((tmp_path / "four").glob("*.pt")))["config"]["accum"] == 4
    for (name, a), b in zip(one.state_dict().items(), four.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_latent_task_trains_and_samples_at_5_nfe_in_pixel_shape(tmp_path, capsys):
    """The pipeline's latent path (§5.1) in-process: the tiny config's super-resolution runs in
    the latent space of its autoencoder; the conditioned network trains on 4x4 latents with the
    16x16 condition, and sample-task writes pixel images of the test split's shape."""
    from conftest import tiny_params, write_params
    from ddm.cli import main
    from ddm.conditioned import load_split, load_task_model

    params = tiny_params()
    assert "latent" in params["conditioned_presets"]["embedded"]["tasks"]["super_resolution"], "tiny config changed"
    p = str(write_params(tmp_path, params))
    f = {k: str(tmp_path / k) for k in ("train.pt", "test.pt", "ae.pt", "ae.json", "model.pt", "samples")}
    common = ["--params", p, "--task", "super_resolution"]
    assert main(["prepare-task", *common, "--train", f["train.pt"], "--test", f["test.pt"]]) == 0
    rc = main(["train-task", *common, "--method", "ddm", "--data", f["train.pt"], "--checkpoints",
               str(tmp_path / "ck"), "--out", f["model.pt"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "runs in latent space" in err[0] and "--autoencoder" in err[0], err
    assert main(["train-autoencoder", *common, "--data", f["train.pt"], "--test", f["test.pt"], "--checkpoints",
                 str(tmp_path / "ck"), "--out", f["ae.pt"], "--metrics", f["ae.json"]]) == 0
    assert main(["train-task", *common, "--method", "ddm", "--data", f["train.pt"], "--autoencoder", f["ae.pt"],
                 "--checkpoints", str(tmp_path / "ck"), "--out", f["model.pt"]]) == 0
    exp, net = load_task_model(f["model.pt"])
    assert (exp.cfg["channels"], exp.cfg["resolution"], net.cond_resolution) == (3, 4, 16)
    assert main(["sample-task", *common, "--method", "ddm", "--model", f["model.pt"], "--data", f["test.pt"],
                 "--autoencoder", f["ae.pt"], "--sets", "5:0", "--out-dir", f["samples"]]) == 0
    x = load_torch(tmp_path / "samples" / "nfe5-r0.pt", "sample file", "ddm sample")
    test = load_split(f["test.pt"], "super_resolution", "test")
    assert x.dtype == torch.uint8 and x.shape == test["target"].shape == (4, 3, 16, 16)
