"""Streaming FID statistics (ddm.fidstats): moments accumulated chunk by chunk equal the one-pass
statistics, and the streamed FID equals the one-pass FID of ddm.metrics within 1e-6."""

import numpy as np
import pytest
import torch

import ddm.metrics as M
from ddm import fidstats
from ddm.datasets import load_dataset
from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier
from ddm.fidstats import FeatureMoments, image_chunks, reference_statistics, streaming_fid


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "digits_classifier.pt"
    train_digits_classifier(path, seed=0)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, classifier):
    path = tmp_path_factory.mktemp("ref") / "digits_train.npz"
    fidstats.reference_stats(load_dataset("digits", None, "train"), DIGITS_CLASSIFIER, classifier, path)
    return path


def test_moments_equal_numpy_over_uneven_chunks_with_a_large_mean():
    """Sums about the first chunk's mean: a mean 1e4 times the spread loses no digits."""
    rng = np.random.default_rng(0)
    f = 1e4 + rng.standard_normal((1001, 16)) @ rng.standard_normal((16, 16))
    m = FeatureMoments()
    for a, b in ((0, 1), (1, 300), (300, 300), (300, 1001)):  # a chunk of one and an empty one
        m.update(f[a:b])
    mu, sigma = m.statistics()
    assert m.count == 1001
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"expected \(n, 16\)"):
        m.update(f[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        FeatureMoments().update(f[:1]).statistics()


def test_streamed_fid_equals_one_pass_fid(classifier, reference):
    """The digits test split as a sample set: one pass (ddm.metrics.fid) against 4 shards of
    100, 100, 249 and 1 images, read one at a time: the same FID within 1e-6, and each shard's
    features handed to on_features (what KID would keep)."""
    x = load_dataset("digits", None, "test")
    assert len(x) == 450
    one = M.fid(x, reference, DIGITS_CLASSIFIER, classifier)
    kept = []
    shards = (x[a:b] for a, b in ((0, 100), (100, 200), (200, 449), (449, 450)))
    streamed = streaming_fid(shards, reference, DIGITS_CLASSIFIER, classifier, on_features=kept.append)
    assert abs(streamed["fid"] - one["fid"]) < 1e-6, (streamed["fid"], one["fid"])
    assert {k: v for k, v in streamed.items() if k != "fid"} == {k: v for k, v in one.items() if k != "fid"}
    assert [len(f) for f in kept] == [100, 100, 249, 1]
    whole = M.extract_features(x, DIGITS_CLASSIFIER, classifier)
    np.testing.assert_array_equal(np.concatenate(kept[:3]), whole[:449])
    np.testing.assert_allclose(kept[3], whole[449:], rtol=1e-12)  # a shard of one: fed as a batch of 2


def test_streamed_fid_checks_the_reference(classifier, reference, tmp_path):
    other = tmp_path / "other.pt"
    train_digits_classifier(other, seed=1, epochs=1, min_accuracy=0.0)
    with pytest.raises(M.ReferenceMismatchError, match="recompute the reference statistics"):
        streaming_fid(iter([]), reference, DIGITS_CLASSIFIER, other)


def test_reference_statistics_of_a_large_data_set_are_streamed(classifier):
    """A data set over the chunk budget is streamed in chunks (here 64 images of 64 bytes, the
    last chunk of 2); its statistics equal the one-pass ones. Within the budget: one pass,
    torch-fidelity's statistics exactly (the embedded references do not change)."""
    x = load_dataset("digits", None, "test")
    feats = M.extract_features(x, DIGITS_CLASSIFIER, classifier)
    mu1, sigma1 = M.feature_statistics(feats)
    assert [len(c) for c in image_chunks(x, 64 * 64)] == [64] * 7 + [2]
    mu, sigma, n = reference_statistics(x, DIGITS_CLASSIFIER, classifier, chunk_bytes=64 * 64)
    assert n == 450
    np.testing.assert_allclose(mu, mu1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, sigma1, rtol=1e-9, atol=1e-10)
    assert abs(M.frechet_distance(mu, sigma, mu1, sigma1)) < 1e-6
    mu, sigma, n = reference_statistics(x, DIGITS_CLASSIFIER, classifier)
    assert np.array_equal(mu, mu1) and np.array_equal(sigma, sigma1) and n == 450
    assert [len(c) for c in image_chunks(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), 1)] == [1, 1, 1]
