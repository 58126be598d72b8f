"""Metrics: FID through the real torch-fidelity (digits classifier extractor), PSNR, MAE."""

import hashlib
import math
import os

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity

import ddm.metrics as M
from ddm import fidstats
from ddm.datasets import to_uint8
from ddm.digits_classifier import (DIGITS_CLASSIFIER, DigitsClassifierFeatureExtractor, load_digits_classifier,
                                     train_digits_classifier)
from ddm.io import MissingWeightsError, load_npz, save_npz


# ------------------------------------------------------------------------------------------
# Data and the classifier (trained once per session)
# ------------------------------------------------------------------------------------------


def _digits(split):
    """Digits split from ddm.datasets; until that module exists, straight from scikit-learn."""
    try:
        from ddm.datasets import load_dataset, load_digits_labels
    except ModuleNotFoundError as e:
        if e.name not in ("ddm.datasets",):
            raise
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * 255.0 / 16.0).astype(np.uint8)[:, None]
        idx = np.random.RandomState(0).permutation(len(x))
        idx = idx[:1437] if split == "train" else idx[1437:]
        return torch.from_numpy(x[idx]), torch.from_numpy(d.target[idx])
    return load_dataset("digits", None, split), torch.as_tensor(np.asarray(load_digits_labels(split)))


@pytest.fixture(scope="session")
def digits():
    return {s: _digits(s) for s in ("train", "test")}


@pytest.fixture(scope="session")
def classifier(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("clf") / "digits_classifier.pt"
    acc = train_digits_classifier(path, seed=0, train=digits["train"], test=digits["test"])
    return path, acc


@pytest.fixture(scope="session")
def train_ref(tmp_path_factory, classifier, digits):
    path = tmp_path_factory.mktemp("ref") / "digits_train.npz"
    rec = fidstats.reference_stats(digits["train"][0], DIGITS_CLASSIFIER, classifier[0], path)
    return path, rec


def _scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ------------------------------------------------------------------------------------------
# Classifier
# ------------------------------------------------------------------------------------------


def test_classifier_accuracy(classifier):
    path, acc = classifier
    assert acc >= 0.95
    model, meta = load_digits_classifier(path)
    assert meta["test_accuracy"] == acc and meta["feature_dim"] == 64
    print(f"digits classifier test accuracy: {acc:.4f}")


def test_classifier_training_is_deterministic(tmp_path, digits):
    kw = dict(seed=3, epochs=2, train=digits["train"], test=digits["test"], min_accuracy=0.0)
    train_digits_classifier(tmp_path / "a.pt", **kw)
    train_digits_classifier(tmp_path / "b.pt", **kw)
    a, _ = load_digits_classifier(tmp_path / "a.pt")
    b, _ = load_digits_classifier(tmp_path / "b.pt")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_extractor_is_registered_and_checks_input(classifier):
    assert DIGITS_CLASSIFIER in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY
    fe = DigitsClassifierFeatureExtractor(
        DIGITS_CLASSIFIER, ["64", "logits"], feature_extractor_weights_path=str(classifier[0])
    )
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    f64, logits = fe(x)
    assert f64.shape == (5, 64) and logits.shape == (5, 10)
    with pytest.raises(ValueError):
        fe(x.float())
    with pytest.raises(ValueError):
        fe(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------
# Fréchet distance
# ------------------------------------------------------------------------------------------


def test_frechet_of_a_feature_set_with_itself_is_zero():
    f = np.random.RandomState(0).randn(600, 16) @ np.random.RandomState(1).randn(16, 16)
    mu, sigma = M.feature_statistics(f)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_gaussian_closed_form_exact_statistics():
    # N(0, I_d) vs N(m, s^2 I_d): |m|^2 + Tr(I) + Tr(s^2 I) - 2 Tr((s^2 I)^(1/2))
    #                           = |m|^2 + d + d s^2 - 2 d s = |m|^2 + d (1 - s)^2.
    d, s = 10, 0.5
    m = np.linspace(-1, 1, d)
    got = M.frechet_distance(np.zeros(d), np.eye(d), m, s**2 * np.eye(d))
    assert got == pytest.approx(m @ m + d * (1 - s) ** 2, rel=1e-12)
    # Commuting (diagonal) covariances: sum_i (sqrt(a_i) - sqrt(b_i))^2 + |dm|^2; one dimension
    # gives (m1 - m2)^2 + (s1 - s2)^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    got = M.frechet_distance(np.ones(3), np.diag(a), np.zeros(3), np.diag(b))
    assert got == pytest.approx(3 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-12)
    assert M.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1, rel=1e-12)


def test_frechet_gaussian_closed_form_from_samples():
    rng = np.random.RandomState(0)
    n, d, s = 40000, 8, 0.5
    m = np.full(d, 0.25)
    f1 = rng.randn(n, d)
    f2 = m + s * rng.randn(n, d)
    expected = m @ m + d * (1 - s) ** 2  # 0.5 + 2.0
    got = M.frechet_distance(*M.feature_statistics(f1), *M.feature_statistics(f2))
    assert got == pytest.approx(expected, rel=0.02)
    assert got == pytest.approx(_scipy_fid(f1, f2), rel=1e-9)


# ------------------------------------------------------------------------------------------
# FID end to end through torch-fidelity
# ------------------------------------------------------------------------------------------


def test_reference_stats_file_records_and_is_atomic(train_ref, classifier, digits, monkeypatch):
    path, rec = train_ref
    ref = M.load_reference_stats(path)
    assert ref["extractor"] == DIGITS_CLASSIFIER and ref["feature_layer"] == "64"
    assert ref["weights_sha256"] == hashlib.sha256(classifier[0].read_bytes()).hexdigest()
    assert ref["num_samples"] == len(digits["train"][0]) == rec["num_samples"]
    assert ref["mu"].shape == (64,) and ref["sigma"].shape == (64, 64)
    assert ref["mu"].dtype == np.float64
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left behind

    # A failed write leaves the previous file untouched and no temporary file.
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fidstats.reference_stats(digits["test"][0], DIGITS_CLASSIFIER, classifier[0], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_fid_self_test_noise(train_ref, classifier, digits):
    ref_path, _ = train_ref
    w = classifier[0]
    same = M.fid(digits["train"][0], ref_path, DIGITS_CLASSIFIER, w)
    assert set(same) == {"fid", "num_samples", "extractor", "reference", "weights_sha256"}
    assert abs(same["fid"]) < 1e-6
    assert same["reference"] == f"{ref_path.name} (n={len(digits['train'][0])})"
    test = M.fid(digits["test"][0], ref_path, DIGITS_CLASSIFIER, w)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (len(digits["test"][0]), 1, 8, 8), dtype=torch.uint8, generator=gen)
    noisy = M.fid(noise, ref_path, DIGITS_CLASSIFIER, w)
    print(f"digits FID test-vs-train {test['fid']:.3f}, noise-vs-train {noisy['fid']:.3f}")
    assert test["num_samples"] == len(digits["test"][0])
    assert 0 < test["fid"] < 0.2 * noisy["fid"]
    assert noisy["fid"] > 50 * test["fid"]


def test_fid_equals_direct_scipy_and_calculate_metrics(train_ref, classifier, digits):
    ref_path, _ = train_ref
    w = classifier[0]
    xtr, xte = digits["train"][0], digits["test"][0]
    got = M.fid(xte, ref_path, DIGITS_CLASSIFIER, w, batch_size=37)["fid"]

    # Our own features with the same model, our own statistics, scipy's sqrtm.
    model, _ = load_digits_classifier(w)
    model = model.double()
    with torch.no_grad():
        f_tr = model.embed(xtr.to(torch.float64)).numpy()
        f_te = model.embed(xte.to(torch.float64)).numpy()
    assert got == pytest.approx(_scipy_fid(f_te, f_tr), rel=1e-6)

    # torch-fidelity's own top-level entry point with the registered extractor.
    tf = torch_fidelity.calculate_metrics(
        input1=M._UInt8Images(xte),
        input2=M._UInt8Images(xtr),
        fid=True,
        feature_extractor=DIGITS_CLASSIFIER,
        feature_extractor_weights_path=str(w),
        cuda=False,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    assert got == pytest.approx(tf[torch_fidelity.KEY_METRIC_FID], rel=1e-9)


def test_fid_accepts_three_channel_and_rejects_float(train_ref, classifier, digits):
    ref_path, _ = train_ref
    x = digits["test"][0]
    one = M.fid(x, ref_path, DIGITS_CLASSIFIER, classifier[0])["fid"]
    three = M.fid(x.expand(-1, 3, -1, -1).clone(), ref_path, DIGITS_CLASSIFIER, classifier[0])["fid"]
    assert one == three
    with pytest.raises(TypeError, match=r"uint8.*ddm\.datasets\.to_uint8"):
        M.fid(x.float(), ref_path, DIGITS_CLASSIFIER, classifier[0])
    assert torch.equal(to_uint8(x.float() / 127.5 - 1.0), x)  # the fix the error names


def test_mismatched_reference_is_refused(train_ref, tmp_path, digits):
    ref_path, _ = train_ref
    other = tmp_path / "other.pt"
    train_digits_classifier(other, seed=1, epochs=1, train=digits["train"], test=digits["test"], min_accuracy=0)
    with pytest.raises(M.ReferenceMismatchError, match="sha256"):
        M.fid(digits["test"][0], ref_path, DIGITS_CLASSIFIER, other)
    # A record from another extractor.
    arrays = load_npz(ref_path, "reference", "test")
    arrays["extractor"] = np.asarray(M.INCEPTION)
    arrays["feature_layer"] = np.asarray("2048")
    fake = tmp_path / "inception_ref.npz"
    save_npz(fake, **arrays)  # as `ddm refstats` writes it (with its checksum)
    with pytest.raises(M.ReferenceMismatchError, match="inception-v3-compat"):
        M.fid(digits["test"][0], fake, DIGITS_CLASSIFIER, other)


def test_missing_weights_raise_clear_errors(tmp_path, monkeypatch, digits, train_ref):
    x = digits["test"][0]
    missing = tmp_path / "nope.pt"
    with pytest.raises(MissingWeightsError, match="train_digits_classifier"):
        M.fid(x, train_ref[0], DIGITS_CLASSIFIER, missing)
    with pytest.raises(MissingWeightsError):
        fidstats.reference_stats(x, DIGITS_CLASSIFIER, None, tmp_path / "r.npz")
    assert not (tmp_path / "r.npz").exists()

    # Inception: an empty torch hub cache and no explicit path -> error, no download, no fallback.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / M.INCEPTION_WEIGHTS_FILENAME
    assert M.default_inception_weights_path() == expected
    with pytest.raises(MissingWeightsError) as e:
        fidstats.reference_stats(x, M.INCEPTION, None, tmp_path / "r.npz")
    msg = str(e.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg
    assert M.INCEPTION_WEIGHTS_URL in msg and M.INCEPTION_WEIGHTS_URL.startswith("https://github.com/")
    assert "fetch_inception_weights" in msg and str(expected) in msg
    with pytest.raises(MissingWeightsError, match="6726825d"):
        M.extract_features(x, M.INCEPTION, tmp_path / "elsewhere.pth")
    assert not expected.exists()


def test_fetch_inception_weights_from_a_mirror(tmp_path):
    # The real file cannot be downloaded here; the download path is exercised with a file:// URL.
    src = tmp_path / "mirror" / M.INCEPTION_WEIGHTS_FILENAME
    src.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, src)
    dest = tmp_path / "hub" / "checkpoints" / M.INCEPTION_WEIGHTS_FILENAME
    out = M.fetch_inception_weights(dest, url=src.as_uri(), progress=False)
    assert out == dest and dest.read_bytes() == src.read_bytes()
    assert M.resolve_weights(M.INCEPTION, dest) == dest
    bad = tmp_path / "mirror" / "bad.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="InceptionV3"):
        M.fetch_inception_weights(tmp_path / "x" / "bad.pth", url=bad.as_uri(), progress=False)
    assert not (tmp_path / "x" / "bad.pth").exists()


# ------------------------------------------------------------------------------------------
# PSNR and MAE
# ------------------------------------------------------------------------------------------


def test_psnr_constant_offset_grey_and_rgb():
    rng = np.random.RandomState(0)
    target = rng.randint(20, 200, size=(3, 1, 16, 16)).astype(np.uint8)
    pred = target + np.uint8(10)
    # Grey: no colour conversion; MSE = 100.
    assert M.psnr(pred, target) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    # RGB, same offset in every channel: Y offset = 10 (65.481 + 128.553 + 24.966) / 255 = 10 * 219/255.
    t3 = rng.randint(20, 200, size=(2, 3, 16, 16)).astype(np.uint8)
    dy = 10 * 219 / 255
    assert M.psnr(t3 + np.uint8(10), t3) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-10)
    # Without the Y channel: RGB MSE = 100.
    assert M.psnr(t3 + np.uint8(10), t3, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 100))
    # Floats in [0, 1] with data_range=1 give the same value.
    assert M.psnr((t3 + 10) / 255.0, t3 / 255.0, data_range=1) == pytest.approx(
        10 * math.log10(255**2 / dy**2), abs=1e-10
    )
    # Torch tensors too.
    assert M.psnr(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(
        10 * math.log10(255**2 / 100), abs=1e-12
    )


def test_rgb_to_y_hand_computed_pixel():
    px = np.array([100, 150, 200], np.float64).reshape(3, 1, 1)
    # 16 + (65.481*100 + 128.553*150 + 24.966*200)/255 = 16 + 30824.25/255
    assert M.rgb_to_y(px)[0, 0] == pytest.approx(136.87941176470588, abs=1e-12)
    assert M.rgb_to_y(np.full((3, 1, 1), 255.0))[0, 0] == pytest.approx(235.0)
    assert M.rgb_to_y(np.zeros((3, 1, 1)))[0, 0] == pytest.approx(16.0)
    assert M.rgb_to_y(np.full((3, 1, 1), 1.0), data_range=1)[0, 0] == pytest.approx(235 / 255)


def test_psnr_border_crop_and_per_image_mean():
    t = np.full((1, 3, 16, 16), 100, np.uint8)
    p = t.copy()
    p[..., :4, :] = 200  # error only inside the 4-pixel border
    assert M.psnr(p, t, crop_border=4) == math.inf
    assert math.isfinite(M.psnr(p, t, crop_border=0))
    # One interior grey pixel off by 16: MSE over the 8x8 interior = 256/64 = 4.
    tg = np.full((1, 1, 16, 16), 100, np.uint8)
    pg = tg.copy()
    pg[0, 0, 8, 8] = 116
    assert M.psnr(pg, tg) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-12)
    assert M.psnr(pg, tg, crop_border=0) == pytest.approx(10 * math.log10(255**2 / 1), abs=1e-12)
    # Mean of per-image PSNRs (not PSNR of the mean MSE), images of different sizes.
    a_t, a_p = np.zeros((1, 10, 10)), np.full((1, 10, 10), 1.0)  # MSE 1
    b_t, b_p = np.zeros((1, 12, 12)), np.full((1, 12, 12), 2.0)  # MSE 4
    expected = (10 * math.log10(255**2 / 1) + 10 * math.log10(255**2 / 4)) / 2
    assert M.psnr([a_p, b_p], [a_t, b_t], crop_border=1) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        M.psnr(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), crop_border=4)


def test_mae_trivial_cases():
    z = np.zeros((2, 1, 4, 4))
    assert M.mae(z, z) == 0.0
    assert M.mae(np.ones_like(z), z) == 1.0
    assert M.mae(np.full((4, 4), 255, np.uint8), np.zeros((4, 4))) == 1.0
    assert M.mae(torch.full((2, 1, 4, 4), 0.25), torch.zeros(2, 1, 4, 4)) == pytest.approx(0.25)
    # Per image, then over images: 1.0 (2x2) and 0.5 (4x4) -> 0.75, not the pixel mean 0.6.
    half = np.zeros((4, 4))
    half[:2] = 1.0
    assert M.mae([np.ones((2, 2)), half], [np.zeros((2, 2)), np.zeros((4, 4))]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.mae(np.full((4, 4), 2.0), np.zeros((4, 4)))
