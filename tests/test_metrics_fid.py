"""FID / KID numerics against independent numpy/scipy references."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from aniportraitgan.errors import InputError
from aniportraitgan.metrics.fid import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid,
    kid_subsets,
    polynomial_mmd2_unbiased,
)


def _features(rng, n, d, scale=1.0, shift=0.0):
    mix = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.normal(size=d) * 0.3


def _ref_stats(x):
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _ref_fid_sqrtm(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def _ref_fid_eigvals(mu1, s1, mu2, s2):
    # eigenvalues of S1 S2 are real and >= 0 in exact arithmetic, also for singular matrices
    ev = np.linalg.eigvals(s1 @ s2)
    tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_feature_statistics_match_numpy():
    rng = np.random.default_rng(0)
    x = _features(rng, 50, 7)
    mu, sigma = feature_statistics(x)
    mu_ref, sigma_ref = _ref_stats(x)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-10, atol=1e-12)
    assert mu.dtype == np.float64 and np.array_equal(sigma, sigma.T)


@pytest.mark.parametrize("d", [4, 32, 128])
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_matches_scipy_reference(d, method):
    rng = np.random.default_rng(d)
    x1 = _features(rng, 4 * d + 10, d)
    x2 = _features(rng, 3 * d + 20, d, scale=1.5, shift=0.2)
    mu1, s1 = _ref_stats(x1)
    mu2, s2 = _ref_stats(x2)
    ref = _ref_fid_sqrtm(mu1, s1, mu2, s2)
    got = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert ref > 0.1
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-8)
    assert fid_from_features(x1, x2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_rank_deficient():
    # N < D: both covariances are singular (rank N - 1)
    rng = np.random.default_rng(1)
    d = 64
    x1 = _features(rng, 20, d)
    x2 = _features(rng, 30, d, scale=2.0, shift=0.1)
    mu1, s1 = _ref_stats(x1)
    mu2, s2 = _ref_stats(x2)
    assert np.linalg.matrix_rank(s1) == 19
    ref = _ref_fid_eigvals(mu1, s1, mu2, s2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy may warn about the singular product
        classic = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    # eps * I offsets and sqrtm's own error limit agreement on singular inputs
    assert classic == pytest.approx(ref, rel=1e-3)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(2)
    d = 16
    # same covariance: distance = squared mean difference, exactly; also for a singular one
    x = _features(rng, 10, d)
    mu, s = _ref_stats(x)
    delta = rng.normal(size=d)
    assert frechet_distance(mu, s, mu + delta, s) == pytest.approx(delta @ delta, rel=1e-6)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(d), np.diag(a), np.zeros(d), np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_identical_sets_give_zero():
    rng = np.random.default_rng(3)
    for n, d in [(200, 16), (12, 40)]:  # full rank and rank deficient
        x = _features(rng, n, d)
        scale = np.trace(np.cov(x, rowvar=False))
        assert fid_from_features(x, x) < 1e-9 * scale
        assert fid_from_features(x, x[::-1]) < 1e-9 * scale  # order does not matter


def _ref_mmd2(x, y):
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_matches_double_loop_reference():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(30, 5))
    fake = rng.normal(size=(25, 5)) * 1.3 + 0.2
    subsets = kid_subsets(30, 25, num_subsets=4, subset_size=12, seed=7)
    ref = np.array([_ref_mmd2(real[ri], fake[fi]) for ri, fi in subsets])
    mean, std = kid(real, fake, num_subsets=4, subset_size=12, seed=7)
    assert mean == pytest.approx(ref.mean(), rel=1e-10)
    assert std == pytest.approx(ref.std(), rel=1e-8)
    assert polynomial_mmd2_unbiased(real[:12], fake[:12]) == pytest.approx(_ref_mmd2(real[:12], fake[:12]), rel=1e-10)


def test_kid_subsets_clip_and_seed():
    subsets = kid_subsets(50, 80, num_subsets=3, subset_size=1000, seed=0)
    assert all(len(r) == 50 and len(f) == 50 for r, f in subsets)
    assert all(len(np.unique(r)) == 50 for r, _ in subsets)  # no replacement within a subset
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 0.5
    assert kid(a, b, num_subsets=5, subset_size=20, seed=1) == kid(a, b, num_subsets=5, subset_size=20, seed=1)
    assert kid(a, b, num_subsets=5, subset_size=20, seed=1) != kid(a, b, num_subsets=5, subset_size=20, seed=2)


def test_kid_unbiased_for_identical_distributions():
    # Mean of the estimator over independent draws from one distribution is ~0; the biased
    # V-statistic (diagonal included) is clearly positive, so this test can fail.
    rng = np.random.default_rng(6)
    m, d, trials = 20, 4, 400
    vals, biased = [], []
    for _ in range(trials):
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        vals.append(polynomial_mmd2_unbiased(x, y))
        k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    vals, biased = np.array(vals), np.array(biased)
    se = vals.std() / np.sqrt(trials)
    assert abs(vals.mean()) < 4 * se
    assert biased.mean() > 10 * se
    # and a real difference is detected
    far = kid(rng.normal(size=(200, d)), rng.normal(size=(200, d)) + 0.5, num_subsets=20, subset_size=100)
    assert far[0] > 5 * far[1] / np.sqrt(20) and far[0] > 0.05


def test_bad_inputs_raise_input_error():
    good = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(InputError, match="at least 2 samples"):
        feature_statistics(good[:1])
    with pytest.raises(InputError, match="2-D"):
        feature_statistics(good[0])
    nan = good.copy()
    nan[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        feature_statistics(nan)
    with pytest.raises(InputError, match="NaN"):
        kid(good, nan)
    with pytest.raises(InputError, match="dimensions differ"):
        kid(good, good[:, :3])
    mu, s = feature_statistics(good)
    with pytest.raises(InputError, match="sigma2"):
        frechet_distance(mu, s, mu, s[:3, :3])
    with pytest.raises(InputError, match="dimensions differ"):
        frechet_distance(mu, s, mu[:3], s[:3, :3])
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(mu * np.nan, s, mu, s)
    with pytest.raises(InputError, match="features_fake: need at least 2"):
        kid(good, good[:1])
    with pytest.raises(InputError, match="subset size"):
        kid(good, good, subset_size=1)
    with pytest.raises(InputError, match="method"):
        frechet_distance(mu, s, mu, s, method="nope")
