"""The no-gradient rest rotations of the body model: exact to roma's special Procrustes, and
without importing roma (which pulls in torch._dynamo, seconds per data-synth worker)."""

from __future__ import annotations

import subprocess
import sys

import roma
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.rotations import nearest_rotation


def test_nearest_rotation_matches_roma():
    g = torch.Generator().manual_seed(0)
    for M in (torch.randn(4096, 3, 3, generator=g), torch.randn(512, 3, 3, generator=g, dtype=torch.float64),
              torch.eye(3) + 0.1 * torch.randn(512, 3, 3, generator=g)):
        R = nearest_rotation(M)
        assert R.dtype == M.dtype
        assert torch.allclose(R, roma.special_procrustes(M), atol=1e-6 if M.dtype == torch.float32 else 1e-12, rtol=0)
        assert torch.allclose(torch.det(R), torch.ones(()).to(M), atol=1e-5)


def test_body_model_without_gradient_equals_the_roma_path():
    body = PortraitBodyModel.load()
    g = torch.Generator().manual_seed(1)
    z_id = torch.randn(64, body.id_dim, generator=g)
    z_exp = torch.rand(64, body.exp_dim, generator=g)
    z_pose = 0.3 * torch.randn(64, 6, 3, generator=g)
    with torch.no_grad():
        fast = body(z_id, z_exp, z_pose)
    slow = body(z_id.clone().requires_grad_(True), z_exp, z_pose)  # roma's path (its damped gradient)
    for name in ("vertices", "joints", "landmarks", "head_center", "head_rotation"):
        assert torch.allclose(getattr(fast, name), getattr(slow, name).detach(), atol=1e-6, rtol=0), name


def test_posing_without_gradient_does_not_import_roma():
    code = ("import sys, torch\nfrom aniportraitgan.body import PortraitBodyModel\n"
            "b = PortraitBodyModel.load()\nwith torch.no_grad():\n    b(*b.neutral_codes(2))\n"
            "print('roma' in sys.modules, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
