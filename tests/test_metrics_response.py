"""The control-response metric: known answers from fake generators whose response is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import matching_face_cameras
from aniportraitgan.generator import Rendered
from aniportraitgan.latents import LabelSampler
from aniportraitgan.metrics.control import ControlConfig, control_metrics
from aniportraitgan.metrics.response import EXPRESSION_PROBES, POSE_PROBES, ResponseRegions, splat_mask

PROBES = [*EXPRESSION_PROBES, *POSE_PROBES]
RES = 48


class FakeGenerator(torch.nn.Module):
    """Draws the posed body model's vertices as points of fixed random colours (the mean colour
    of the vertices in a pixel, white elsewhere): pixels change exactly where the body moves.
    `mode="global"` instead paints a pattern whose phase depends on every code, so any control
    changes every pixel alike; `mode="static"` ignores the codes; `swap` exchanges two
    expression coefficients before posing (a generator that moves the wrong part)."""

    def __init__(self, body, mode: str = "splat", swap: tuple[int, int] | None = None):
        super().__init__()
        self.body, self.mode, self.swap = body, mode, swap
        self.config = SimpleNamespace(id_dim=body.id_dim, noise_dim=4)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        g = torch.Generator().manual_seed(0)
        self.colours = torch.rand(body.skinning_weights.shape[0], 3, generator=g) * 2 - 1
        self.weights = torch.randn(100, generator=g) * 7.0

    def _draw(self, verts, cams, H, codes):
        B = verts.shape[0]
        if self.mode == "static":
            return torch.zeros(B, 3, H, H)
        if self.mode == "global":
            s = (codes @ self.weights[: codes.shape[1]])[:, None, None, None]
            y, x = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
            phase = (x * 0.37 + y * 0.91)[None, None] + torch.arange(3)[None, :, None, None]
            return 0.8 * torch.sin(s + phase)
        uv, depth = cams.project(verts, H, H)
        col, row = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        ok = (depth > 0) & (col >= 0) & (col < H) & (row >= 0) & (row < H)
        idx = (row * H + col).clamp(0, H * H - 1)
        acc = torch.zeros(B, H * H, 4)
        vals = torch.cat([self.colours[None].expand(B, -1, -1), torch.ones(B, verts.shape[1], 1)], -1) * ok[..., None]
        acc.scatter_add_(1, idx[..., None].expand(-1, -1, 4), vals)
        img = torch.where(acc[..., 3:] > 0, acc[..., :3] / acc[..., 3:].clamp_min(1), torch.ones(1))
        return img.view(B, H, H, 3).permute(0, 3, 1, 2)

    def forward(self, latents, cameras, face_cameras=None, options=None):
        z_exp = latents.z_exp.clone()
        if self.swap is not None:
            i, j = self.swap
            z_exp[:, [i, j]] = z_exp[:, [j, i]]
        out = self.body(latents.z_id, z_exp, latents.z_pose)
        codes = torch.cat([z_exp, latents.z_pose.flatten(1)], 1)
        if face_cameras is None:
            face_cameras = matching_face_cameras(cameras, out.head_center, out.head_rotation)
        Hp, Hf = options.portrait_resolution, options.face_resolution
        portrait = self._draw(out.vertices, cameras, Hp, codes)
        face = self._draw(out.vertices, face_cameras, Hf, codes) if Hf else None
        ones = torch.ones(portrait.shape[0], 1, Hp, Hp)
        return Rendered(portrait, ones, ones, face, None, None, face_cameras)


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load()


@pytest.fixture(scope="module")
def sampler(body):
    n = 8
    g = np.random.default_rng(0)
    labels = {
        "z_id": g.normal(0, 0.5, (n, body.id_dim)).astype(np.float32),
        "z_exp": g.uniform(0, 0.2, (n, body.exp_dim)).astype(np.float32),
        "z_pose": g.normal(0, 0.05, (n, 6, 3)).astype(np.float32),
        "cam_yaw": g.normal(0, 0.2, n).astype(np.float32), "cam_pitch": g.normal(0, 0.05, n).astype(np.float32),
        "cam_radius": np.full(n, 1.6, np.float32), "cam_fov": np.full(n, 20.0, np.float32),
        "cam_look_at": np.tile(np.array([[0.0, 0.02, 0.0]], np.float32), (n, 1)),
    }
    return LabelSampler(labels)


def _response(body, sampler, **kw):
    G = FakeGenerator(body, **kw)
    cfg = ControlConfig(num=4, response_num=4)
    return control_metrics(G, sampler, cfg, resolution=RES, face_resolution=RES, batch_size=2, progress=False,
                           metrics=["response"])


def test_a_generator_that_moves_only_what_the_body_moves_has_large_ratios(body, sampler):
    m = _response(body, sampler)
    assert set(m) == {f"response_{p}{s}" for p in PROBES for s in ("", "_in", "_out")}
    for p in PROBES:
        assert m[f"response_{p}_in"] > 2.0, p  # 8-bit levels: the points moved
        assert m[f"response_{p}"] > 5.0, (p, m[f"response_{p}"], m[f"response_{p}_out"])


def test_a_generator_that_changes_everything_alike_has_ratios_near_one(body, sampler):
    m = _response(body, sampler, mode="global")
    for p in PROBES:
        assert m[f"response_{p}_in"] > 3.0, p
        assert 0.75 < m[f"response_{p}"] < 1.33, (p, m[f"response_{p}"])


def test_a_generator_that_ignores_the_controls_has_no_response(body, sampler):
    m = _response(body, sampler, mode="static")
    for p in PROBES:
        assert m[f"response_{p}_in"] == 0.0 and m[f"response_{p}_out"] == 0.0
        assert math.isnan(m[f"response_{p}"])


def test_an_expression_that_moves_the_wrong_part_has_a_small_ratio(body, sampler):
    names = list(body.expression_names)
    m = _response(body, sampler, swap=(names.index("jawOpen"), names.index("browInnerUp")))
    assert m["response_jawOpen"] < 0.5 and m["response_browInnerUp"] < 0.5
    assert m["response_smile"] > 5.0  # the others still answer


def test_the_regions_are_where_the_body_model_moves(body):
    from aniportraitgan.cameras import look_at_cameras

    cams = look_at_cameras(torch.zeros(1), torch.zeros(1), 1.6, 20.0, torch.tensor([[0.0, 0.02, 0.0]]))
    z_id, z_exp, z_pose = body.neutral_codes(1)
    before = body(z_id, z_exp, z_pose)
    pose = z_pose.clone()
    pose[:, 1, 2], pose[:, 2, 2] = 0.25, -0.25  # shrug
    after = body(z_id, z_exp, pose)
    everything = torch.ones(before.vertices.shape[1], dtype=torch.bool)
    region, rest = ResponseRegions().masks(cams, 64, before.vertices, after.vertices, everything)
    rows = region[0].nonzero()[:, 0].float()
    head_rows = rest[0].nonzero()[:, 0].float()
    # The shoulders lie below the head in the image, and the two masks do not overlap.
    assert region.any() and rest.any() and not (region & rest).any()
    assert rows.mean() > head_rows.min() + 10


def test_splat_mask_marks_the_points_and_their_neighbourhood():
    uv = torch.tensor([[[2.5, 3.5], [-1.0, 0.0], [7.9, 7.9]]])
    valid = torch.tensor([[True, True, False]])
    m = splat_mask(uv, valid, 8, 8, 1)
    assert m.sum() == 9 and m[0, 3, 2] and m[0, 2, 1] and m[0, 4, 3] and not m[0, 7, 7]
    assert splat_mask(uv, valid, 8, 8, 0).sum() == 1
