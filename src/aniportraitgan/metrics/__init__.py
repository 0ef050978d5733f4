"""Image-quality metrics: FID and KID on Inception features, feature caching, reports.

Typical use (see each module for details):

    from aniportraitgan.metrics import InceptionFeatures, RealStatsCache, extract_features
    from aniportraitgan.metrics import frechet_distance, kid, write_report
    ext = InceptionFeatures()                                     # needs default_1.pt
    real = RealStatsCache(dataset_dir).get(ext, "train", 20000, 256, images=real_loader)
    fake = extract_features(sample_fn, ext, num=20000, batch_size=32)   # sample_fn(n) -> images
    mu, sigma = feature_statistics(fake)
    fid = frechet_distance(real.mu, real.sigma, mu, sigma)
    kid_mean, kid_std = kid(real.features, fake)                   # raw; tables print x100
    write_report({"fid_face": fid, "kid_face": kid_mean, "kid_face_std": kid_std}, "out/metrics.json")
"""

from .features import CACHE_DIRNAME, FeatureStats, RealStatsCache, extract_features, fingerprint_files
from .fid import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid,
    kid_subsets,
    polynomial_mmd2_unbiased,
)
from .inception import (
    INCEPTION_PIP_HINT,
    InceptionFeatures,
    RandomProjectionFeatures,
    find_inception_weights,
    legacy_bilinear_resize,
    prepare_images,
)
from .report import KID_DISPLAY_SCALE, atomic_write, compare, load_report, markdown_table, write_report

__all__ = [
    "CACHE_DIRNAME",
    "FeatureStats",
    "INCEPTION_PIP_HINT",
    "InceptionFeatures",
    "KID_DISPLAY_SCALE",
    "RandomProjectionFeatures",
    "RealStatsCache",
    "atomic_write",
    "compare",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "fingerprint_files",
    "find_inception_weights",
    "frechet_distance",
    "kid",
    "kid_subsets",
    "legacy_bilinear_resize",
    "load_report",
    "markdown_table",
    "polynomial_mmd2_unbiased",
    "prepare_images",
    "write_report",
]
