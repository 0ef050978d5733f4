"""Fréchet Inception Distance and Kernel Inception Distance on feature arrays.

Everything here works on numpy arrays in float64: features [N, D] from any extractor
(`InceptionFeatures` for the standard numbers, `RandomProjectionFeatures` for tests).

* FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the Gaussian
  statistics of the two feature sets.
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial kernel
  k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/D by default, averaged over random subsets of
  equal size. It is an unbiased estimator, so it can be slightly negative for matching sets.
  The paper (and `report.py`) prints KID x 100; the functions here return the raw value.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from ..errors import InputError

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "kid",
    "kid_subsets",
    "polynomial_mmd2_unbiased",
]


def _as_features(features, name: str = "features", min_samples: int = 2) -> np.ndarray:
    """Validate a feature matrix [N, D] and return it as float64."""
    try:
        arr = np.asarray(features.detach().cpu().numpy() if hasattr(features, "detach") else features)
    except Exception as exc:  # noqa: BLE001 - anything not array-like
        raise InputError(f"{name}: cannot convert to an array ({exc})") from exc
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array [N, D], got shape {tuple(arr.shape)}")
    if arr.shape[1] < 1:
        raise InputError(f"{name}: feature dimension is 0 (shape {tuple(arr.shape)})")
    if arr.shape[0] < min_samples:
        raise InputError(
            f"{name}: need at least {min_samples} samples, got {arr.shape[0]} (shape {tuple(arr.shape)})"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name}: contains NaN or inf values ({bad} of {arr.shape[0]} rows)")
    return arr


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (ddof=1) of features [N, D], in float64."""
    x = _as_features(features)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    # Symmetrise: the matrix product is symmetric only up to rounding.
    sigma = 0.5 * (sigma + sigma.T)
    return mu, sigma


def _check_stats(mu, sigma, tag: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise InputError(f"mu{tag}: expected a vector [D], got shape {mu.shape}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise InputError(f"sigma{tag}: expected shape ({d}, {d}) to match mu{tag}, got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"mu{tag}/sigma{tag}: contain NaN or inf values")
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; tiny negative eigenvalues (rounding) -> 0."""
    w, v = np.linalg.eigh(0.5 * (sigma + sigma.T))
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) with A = S1^(1/2): S1 S2 is similar to A S2 A, which is
    # symmetric PSD, so its eigenvalues are real and non-negative. No complex arithmetic and no
    # epsilon is needed, even for singular (rank-deficient, N < D) covariances.
    a = _psd_sqrt(sigma1)
    m = a @ sigma2 @ a
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    # The classic route (as in most FID code): scipy's Schur-based sqrtm of the non-symmetric
    # product; add eps * I to both covariances when the product is singular.
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older scipy returned (sqrtm, errest) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"frechet_distance: sqrtm of a singular covariance product; adding {eps} * I to both covariances",
            RuntimeWarning,
            stacklevel=3,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
    if np.iscomplexobj(covmean):
        # The exact result is real; imaginary parts are numerical noise. Large ones mean the
        # computation broke down and the number would be meaningless.
        imag = float(np.max(np.abs(covmean.imag)))
        scale = max(1.0, float(np.max(np.abs(covmean.real))))
        if imag > 1e-3 * scale:
            raise InputError(
                f"frechet_distance: sqrtm produced a large imaginary component ({imag:.3g}); "
                "the covariances are badly conditioned, use method='eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "eigh") -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    method="eigh" (default) uses a symmetric eigen-decomposition that is exact for singular
    covariances; method="sqrtm" uses scipy.linalg.sqrtm on S1 S2 (the classic implementation,
    with an eps * I offset when the product is singular and tiny imaginary parts dropped).
    Both agree to ~1e-6 relative on well-conditioned inputs.
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise InputError(f"frechet_distance: feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    else:
        raise InputError(f"frechet_distance: unknown method {method!r} (use 'eigh' or 'sqrtm')")
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    # The true distance is >= 0; rounding can give -1e-12 for identical statistics.
    return max(value, 0.0)


def fid_from_features(features1, features2, method: str = "eigh") -> float:
    """FID between two feature sets [N1, D] and [N2, D]."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    return frechet_distance(mu1, s1, mu2, s2, method=method)


def polynomial_mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 between equal-size samples x [m, D] and y [m, D], polynomial kernel.

    MMD^2_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_{i,j} k(x_i,y_j)/m^2.
    The cross term uses all m^2 pairs: x and y are independent, so it is already unbiased.
    """
    m = x.shape[0]
    if y.shape[0] != m:
        raise InputError(f"polynomial_mmd2_unbiased: subsets must have equal size, got {m} and {y.shape[0]}")
    if m < 2:
        raise InputError(f"polynomial_mmd2_unbiased: need at least 2 samples per subset, got {m}")
    d = x.shape[1]
    g = 1.0 / d if gamma is None else float(gamma)
    kxx = (g * (x @ x.T) + coef0) ** degree
    kyy = (g * (y @ y.T) + coef0) ** degree
    kxy = (g * (x @ y.T) + coef0) ** degree
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid_subsets(
    n_real: int, n_fake: int, num_subsets: int = 100, subset_size: int = 1000, seed: int | None = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (real_idx, fake_idx) index pairs `kid` uses: without replacement inside a subset,
    independent across subsets; subset_size is clipped to min(n_real, n_fake)."""
    if num_subsets < 1:
        raise InputError(f"kid: num_subsets must be >= 1, got {num_subsets}")
    m = min(int(subset_size), n_real, n_fake)
    if m < 2:
        raise InputError(
            f"kid: subset size {m} is too small (subset_size={subset_size}, n_real={n_real}, n_fake={n_fake}); need >= 2"
        )
    rng = np.random.default_rng(seed)
    return [
        (rng.choice(n_real, m, replace=False), rng.choice(n_fake, m, replace=False)) for _ in range(num_subsets)
    ]


def kid(
    features_real,
    features_fake,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased polynomial-kernel MMD^2 over
    `num_subsets` random subsets of `subset_size` (clipped to the smaller set) from each set.

    Raw value, not scaled; multiply by 100 for the paper's tables. Deterministic for a given seed.
    """
    real = _as_features(features_real, "features_real")
    fake = _as_features(features_fake, "features_fake")
    if real.shape[1] != fake.shape[1]:
        raise InputError(f"kid: feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if degree < 1:
        raise InputError(f"kid: degree must be >= 1, got {degree}")
    subsets = kid_subsets(real.shape[0], fake.shape[0], num_subsets, subset_size, seed)
    values = np.array(
        [polynomial_mmd2_unbiased(real[ri], fake[fi], degree, gamma, coef0) for ri, fi in subsets]
    )
    return float(values.mean()), float(values.std())
