"""Stand-in extractor, batched extraction, the real-statistics cache, end-to-end FID/KID."""

import os
import warnings

import numpy as np
import pytest
import torch

from aniportraitgan.errors import InputError
from aniportraitgan.metrics import (
    FeatureStats,
    RandomProjectionFeatures,
    RealStatsCache,
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid,
)


def _images(n, size=32, seed=0, brightness=0.0):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish random images in [-1, 1]
    low = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (img + brightness).clamp(-1, 1)


class CountingSampler:
    """fn(n) -> n images, counting the images drawn (to detect cache hits)."""

    def __init__(self, seed=0, size=32):
        self.g = torch.Generator().manual_seed(seed)
        self.size = size
        self.drawn = 0
        self.calls = []

    def __call__(self, n):
        self.drawn += n
        self.calls.append(n)
        return torch.rand(n, 3, self.size, self.size, generator=self.g) * 2 - 1


def test_random_projection_deterministic_and_shaped():
    x = _images(5, 48)
    a, b = RandomProjectionFeatures(dim=32, seed=3), RandomProjectionFeatures(dim=32, seed=3)
    fa, fb = a(x), b(x)
    assert fa.shape == (5, 32) and torch.isfinite(fa).all()
    assert torch.equal(fa, fb)
    assert not torch.allclose(fa, RandomProjectionFeatures(dim=32, seed=4)(x))
    assert a.name != RandomProjectionFeatures(dim=32, seed=4).name != RandomProjectionFeatures(dim=16, seed=3).name
    # any resolution; uint8 input equals its [-1, 1] float version
    assert a(_images(2, 100)).shape == (2, 32)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(a(u8), a(u8.float() / 127.5 - 1))
    # features respond to the images (different sets give different features)
    assert (fa[0] - fa[1]).abs().max() > 1e-4


def test_extract_features_batching_sources_agree():
    ext = RandomProjectionFeatures(dim=16)
    x = _images(10)
    whole = ext(x).numpy()
    uneven = [x[:3], x[3:8], x[8:]]
    f1 = extract_features(uneven, ext, batch_size=4, progress=False)
    f2 = extract_features(x, ext, batch_size=3, progress=False)
    f3 = extract_features(list(x), ext, num=7, batch_size=4, progress=False)  # single [3,H,W] images
    f4 = extract_features([(x[:6], "label"), (x[6:], "label")], ext, batch_size=5, progress=False)
    f5 = extract_features([{"image": x[:4], "face": x[:4] * 0}, {"image": x[4:], "face": x[4:] * 0}], ext,
                          batch_size=8, progress=False)
    assert f1.dtype == np.float32 and f1.shape == (10, 16)
    for f in (f1, f2, f4, f5):
        np.testing.assert_allclose(f, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f3, whole[:7], rtol=1e-5, atol=1e-6)


def test_extract_features_from_sampler():
    s = CountingSampler()
    f = extract_features(s, RandomProjectionFeatures(dim=8), num=10, batch_size=4, progress=False)
    assert f.shape == (10, 8) and s.calls == [4, 4, 2]


def test_extract_features_bad_inputs():
    ext = RandomProjectionFeatures(dim=8)
    with pytest.raises(InputError, match=r"expected shape \[B, 3, H, W\], got \(2, 4, 16, 16\)"):
        extract_features([torch.zeros(2, 4, 16, 16)], ext, progress=False)
    with pytest.raises(InputError, match=r"expected shape \[B, 3, H, W\]"):
        extract_features([torch.zeros(2, 16, 16)], ext, progress=False)
    bad = _images(3)
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        extract_features([bad], ext, progress=False)
    with pytest.raises(InputError, match=r"must be in \[-1, 1\]"):
        extract_features([_images(2) * 127.5 + 127.5], ext, progress=False)
    with pytest.raises(InputError, match="yielded only 4"):
        extract_features([_images(4)], ext, num=6, progress=False)
    with pytest.raises(InputError, match="num is required"):
        extract_features(CountingSampler(), ext, progress=False)
    with pytest.raises(InputError, match="without key 'image'"):
        extract_features([{"face": _images(2)}], ext, progress=False)

    class NaNExtractor(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(InputError, match="NaN/inf features"):
        extract_features([_images(2)], NaNExtractor(), progress=False)


def test_end_to_end_stand_in_fid_kid():
    ext = RandomProjectionFeatures(dim=16)
    real = extract_features(CountingSampler(seed=1), ext, num=64, batch_size=16, progress=False)
    same = extract_features(CountingSampler(seed=2), ext, num=64, batch_size=16, progress=False)
    shifted = extract_features(
        lambda n: _images(n, seed=5, brightness=0.6), ext, num=64, batch_size=16, progress=False
    )
    assert fid_from_features(real, real) < 1e-8
    fid_same, fid_shift = fid_from_features(real, same), fid_from_features(real, shifted)
    assert fid_shift > 5 * fid_same
    kid_same, kid_shift = kid(real, same, num_subsets=10, subset_size=32), kid(real, shifted, num_subsets=10, subset_size=32)
    assert kid_shift[0] > 5 * abs(kid_same[0])


def test_cache_round_trip_and_keys(tmp_path):
    ext = RandomProjectionFeatures(dim=8)
    cache = RealStatsCache(tmp_path / "ds")
    s = CountingSampler(seed=0)
    stats = cache.get(ext, "face", 12, 32, images=s, batch_size=5, progress=False)
    path = tmp_path / "ds" / ".metrics_cache" / f"{ext.name}_face_12_32.npz"
    assert path.is_file() and s.drawn == 12
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    mu, sigma = feature_statistics(stats.features)
    np.testing.assert_allclose(stats.mu, mu)
    np.testing.assert_allclose(stats.sigma, sigma)
    # second call: loaded, not recomputed, identical arrays
    again = cache.get(ext, "face", 12, 32, images=s, progress=False)
    assert s.drawn == 12
    for a, b in ((again.mu, stats.mu), (again.sigma, stats.sigma), (again.features, stats.features)):
        np.testing.assert_array_equal(a, b)
    assert again.meta["extractor"] == ext.name and again.meta["count"] == 12
    # a different count, resolution, split or extractor is a different file: recomputed
    cache.get(ext, "face", 10, 32, images=s, progress=False)
    cache.get(ext, "face", 12, 64, images=s, progress=False)
    cache.get(ext, "image", 12, 32, images=s, progress=False)
    cache.get(RandomProjectionFeatures(dim=8, seed=1), "face", 12, 32, images=s, progress=False)
    assert s.drawn == 12 + 10 + 12 + 12 + 12
    assert len(list(path.parent.glob("*.npz"))) == 5
    # refresh forces recomputation
    cache.get(ext, "face", 12, 32, images=s, progress=False, refresh=True)
    assert s.drawn == 70


def test_cache_corrupt_and_stale_files_are_recomputed(tmp_path):
    ext = RandomProjectionFeatures(dim=8)
    cache = RealStatsCache(tmp_path)
    s = CountingSampler()
    good = cache.get(ext, "train", 6, 32, images=s, progress=False)
    path = cache.path_for(ext.name, "train", 6, 32)

    path.write_bytes(b"not an npz file")
    with pytest.warns(RuntimeWarning, match="corrupt or stale"):
        redo = cache.get(ext, "train", 6, 32, images=s, progress=False)
    assert s.drawn == 12 and redo.features.shape == (6, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file loads cleanly
        assert cache.load(ext.name, "train", 6, 32, feature_dim=8) is not None

    # stale: right file name, wrong content (rows, dim, meta, shapes)
    bad_rows = FeatureStats.from_features(good.features[:4])
    cache.save(bad_rows, ext.name, "train", 6, 32)
    with pytest.warns(RuntimeWarning, match="4 feature rows, expected 6"):
        assert cache.load(ext.name, "train", 6, 32) is None
    wrong_dim = FeatureStats.from_features(np.random.default_rng(0).normal(size=(6, 5)))
    cache.save(wrong_dim, ext.name, "train", 6, 32)
    with pytest.warns(RuntimeWarning, match="feature dim 5, expected 8"):
        cache.get(ext, "train", 6, 32, images=s, progress=False)
    assert s.drawn == 18
    np.savez(path, mu=good.mu, sigma=good.sigma[:3], features=good.features, meta=np.array(
        '{"format": 1, "extractor": "%s", "split": "train", "num": 6, "resolution": "32"}' % ext.name))
    with pytest.warns(RuntimeWarning, match="do not match"):
        assert cache.load(ext.name, "train", 6, 32) is None
    np.savez(path, mu=good.mu, sigma=good.sigma, features=good.features)
    with pytest.warns(RuntimeWarning, match="missing arrays"):
        assert cache.load(ext.name, "train", 6, 32) is None


def test_cache_stats_give_same_fid_as_direct(tmp_path):
    ext = RandomProjectionFeatures(dim=8)
    real = RealStatsCache(tmp_path).get(ext, "train", 40, 32, images=CountingSampler(seed=3), progress=False)
    loaded = RealStatsCache(tmp_path).load(ext.name, "train", 40, 32, feature_dim=8)
    fake = extract_features(CountingSampler(seed=4), ext, num=40, progress=False)
    mu, sigma = feature_statistics(fake)
    direct = fid_from_features(real.features, fake)
    assert frechet_distance(loaded.mu, loaded.sigma, mu, sigma) == pytest.approx(direct, rel=1e-9)


def test_cache_requires_extractor_name(tmp_path):
    class Anonymous(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(InputError, match="`name` attribute"):
        RealStatsCache(tmp_path).get(Anonymous(), "train", 4, 32, images=CountingSampler(), progress=False)


def test_cache_fingerprint_invalidates(tmp_path):
    from aniportraitgan.metrics.features import fingerprint_files

    card = tmp_path / "dataset.json"
    card.write_text('{"num_samples": 6}')
    fp1 = fingerprint_files(card)
    ext = RandomProjectionFeatures(dim=8)
    s = CountingSampler()
    RealStatsCache(tmp_path, fingerprint=fp1).get(ext, "train", 6, 32, images=s, progress=False)
    RealStatsCache(tmp_path, fingerprint=fp1).get(ext, "train", 6, 32, images=s, progress=False)
    assert s.drawn == 6
    card.write_text('{"num_samples": 6, "regenerated": true}')
    fp2 = fingerprint_files(card)
    assert fp2 != fp1 and len(fp2) == 16
    with pytest.warns(RuntimeWarning, match="fingerprint"):
        RealStatsCache(tmp_path, fingerprint=fp2).get(ext, "train", 6, 32, images=s, progress=False)
    assert s.drawn == 12
    with pytest.raises(InputError, match="cannot read"):
        fingerprint_files(tmp_path / "missing.json")
