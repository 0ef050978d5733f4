"""The opacity envelope (`GeneratorConfig.envelope_distance`): intersections far from the posed
mesh lose their opacity, the rest of the image is untouched. Known answer on the bundled model,
which ships with a 15 cm envelope because, without it, some views show floaters 20-29 cm above
the head (seeds 0, 4, 7, 12 at yaw 15 deg; long hair lies within 12 cm)."""

from __future__ import annotations

import math

import pytest
import torch

from aniportraitgan.errors import InputError
from aniportraitgan.generator import GeneratorConfig, RenderOptions
from aniportraitgan.generator.renderer import ENVELOPE_RAMP, camera_rays
from aniportraitgan.inference import load_inference_model
from aniportraitgan.latents import LatentSample

SEED = 0  # measured: 59 foreground pixels more than 10 cm from the mesh without the envelope


@pytest.fixture(scope="module")
def model():
    return load_inference_model("demo", "cpu")


def _render(model, envelope: float):
    G = model.generator
    before = G.config.envelope_distance
    G.config.envelope_distance = envelope
    try:
        z_id, eps = model.identity(SEED)
        lat = LatentSample(z_id, torch.zeros(1, G.config.exp_dim), torch.zeros(1, 6, 3), eps)
        cams = model.cameras(torch.tensor([math.radians(15)]), torch.tensor([0.0]))
        with torch.no_grad():
            out = G(lat, cams, None, RenderOptions(64, None, 1, 0.7))
            body = G.body(lat.z_id, lat.z_exp, lat.z_pose)
    finally:
        G.config.envelope_distance = before
    return out, body, cams


def _surface_distance(out, body, cams) -> torch.Tensor:
    """[H*W] metres from each pixel's surface point (at its depth) to the nearest mesh vertex."""
    o, d = camera_rays(cams, 64, 64, torch.float32)
    points = o[0] + d[0] * out.portrait_depth.reshape(-1, 1)
    return torch.cdist(points, body.vertices[0]).min(1).values


def _far_foreground(out, body, cams, metres: float) -> int:
    """Foreground pixels (alpha > 0.5) whose surface point lies farther than `metres` from the mesh."""
    return int(((out.portrait_alpha.reshape(-1) > 0.5) & (_surface_distance(out, body, cams) > metres)).sum())


def test_the_bundled_model_ships_with_a_15_cm_envelope(model):
    assert model.generator.config.envelope_distance == 0.15


def test_the_envelope_removes_the_floaters_and_keeps_the_person(model):
    off, body, cams = _render(model, 0.0)
    on, _, _ = _render(model, 0.15)
    # measured 18 pixels beyond 17 cm (59 on the model bundled before 2026-12-04, whose template
    # was not smoothed)
    assert _far_foreground(off, body, cams, 0.15 + ENVELOPE_RAMP) >= 8
    assert _far_foreground(on, body, cams, 0.15 + ENVELOPE_RAMP) == 0
    # near the body nothing changes: the pixels whose surface lies within 10 cm of the mesh
    near = _surface_distance(off, body, cams) < 0.10
    near &= off.portrait_alpha.reshape(-1) > 0.99  # opaque there: nothing behind it shows through
    assert near.sum() > 500
    diff = (on.portrait - off.portrait).abs().amax(1).reshape(-1)
    assert float(diff[near].max()) < 1e-3


def test_an_envelope_beyond_the_scene_changes_nothing(model):
    off, _, _ = _render(model, 0.0)
    wide, _, _ = _render(model, 10.0)
    torch.testing.assert_close(wide.portrait, off.portrait, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_a_negative_or_non_finite_envelope_is_refused(bad):
    with pytest.raises(InputError, match="envelope_distance must be >= 0 metres"):
        GeneratorConfig(envelope_distance=bad)
