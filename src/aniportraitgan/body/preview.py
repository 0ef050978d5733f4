"""A contact sheet of the portrait body model: identities, expressions, head and shoulder poses.

Used by `make demo` until a trained generator ships, and as a visual check of the asset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from aniportraitgan.body.model import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras, matching_face_cameras
from aniportraitgan.render import MeshRenderer, TexturedMesh

SKIN = (205, 170, 150)
# (row label, [(column label, {expression name: value}, {joint index: axis-angle (scene axes)}, camera yaw)])
ROWS = [
    ("identity", [(f"id {i}", {}, {}, 0.0) for i in range(5)]),
    ("expression", [
        ("neutral", {}, {}, 0.0),
        ("jawOpen", {"jawOpen": 1.0}, {}, 0.0),
        ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, {}, 0.0),
        ("brow raise", {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0}, {}, 0.0),
        ("blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, {}, 0.0),
    ]),
    ("head pose", [
        ("turn left", {}, {3: (0.0, 0.6, 0.0)}, 0.0),
        ("turn right", {}, {3: (0.0, -0.6, 0.0)}, 0.0),
        ("nod down", {}, {3: (0.45, 0.0, 0.0)}, 0.0),
        ("look up", {}, {3: (-0.35, 0.0, 0.0)}, 0.0),
        ("tilt", {}, {0: (0.0, 0.0, 0.25), 3: (0.0, 0.0, 0.25)}, 0.0),
    ]),
    ("shoulders", [
        ("shrug", {}, {1: (0.0, 0.0, 0.3), 2: (0.0, 0.0, -0.3)}, 0.0),
        ("drop", {}, {1: (0.0, 0.0, -0.2), 2: (0.0, 0.0, 0.2)}, 0.0),
        ("left fwd", {}, {1: (0.0, -0.35, 0.0)}, 0.0),
        ("right fwd", {}, {2: (0.0, 0.35, 0.0)}, 0.0),
        ("arms out", {}, {4: (0.0, 0.0, 0.5), 5: (0.0, 0.0, -0.5)}, 0.0),
    ]),
    ("camera", [(f"yaw {d:+d}", {}, {}, float(np.radians(d))) for d in (-40, -20, 0, 20, 40)]),
]


def _codes(body: PortraitBodyModel, row: int, items, generator: torch.Generator):
    n = len(items)
    z_id = torch.zeros(n, body.id_dim)
    if row == 0:
        z_id = torch.randn(n, body.id_dim, generator=generator)
    z_exp = torch.zeros(n, body.exp_dim)
    z_pose = torch.zeros(n, 6, 3)
    yaw = torch.zeros(n)
    for i, (_, exps, poses, cam_yaw) in enumerate(items):
        for name, value in exps.items():
            z_exp[i, body.expression_names.index(name)] = value
        for joint, rotvec in poses.items():
            z_pose[i, joint] = torch.tensor(rotvec)
        yaw[i] = cam_yaw
    return z_id, z_exp, z_pose, yaw


def render_contact_sheet(path: str | Path, resolution: int = 256, seed: int = 0, body: PortraitBodyModel | None = None) -> Path:
    """Render the sheet to `path` (PNG). Expression cells use the face camera so that small
    facial motions are visible; the others use the main portrait camera."""

    body = body or PortraitBodyModel.load()
    renderer = MeshRenderer()
    texture = np.full((8, 8, 3), SKIN, dtype=np.uint8)
    faces = body.faces.numpy().astype(np.int32)
    uvs = body.uvs.numpy()
    face_uvs = body.face_uvs.numpy().astype(np.int32)
    g = torch.Generator().manual_seed(seed)
    label_w, title_h = 110, 22
    cols = max(len(items) for _, items in ROWS)
    sheet = Image.new("RGB", (label_w + cols * resolution, len(ROWS) * (resolution + title_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row_label, items) in enumerate(ROWS):
        z_id, z_exp, z_pose, yaw = _codes(body, r, items, g)
        with torch.no_grad():
            out = body(z_id, z_exp, z_pose)
            cams = look_at_cameras(yaw, torch.zeros_like(yaw))
            if row_label == "expression":
                cams = matching_face_cameras(cams, out.head_center, out.head_rotation)
        y0 = r * (resolution + title_h)
        draw.text((6, y0 + title_h + resolution // 2), row_label, fill="black")
        for c, (col_label, *_rest) in enumerate(items):
            mesh = TexturedMesh(out.vertices[c].numpy(), faces, uvs, face_uvs, texture)
            res = renderer.render(mesh, cams.c2w[c].numpy(), float(cams.fov_deg[c]), resolution, resolution)
            tile = Image.fromarray(res.rgb)
            tile_draw = ImageDraw.Draw(tile)
            uv, _ = cams[c].project(out.landmarks[c : c + 1], resolution, resolution)
            for u, v in uv[0].tolist():
                tile_draw.ellipse((u - 1.5, v - 1.5, u + 1.5, v + 1.5), fill=(220, 30, 30))
            x0 = label_w + c * resolution
            sheet.paste(tile, (x0, y0 + title_h))
            draw.text((x0 + 4, y0 + 4), col_label, fill="black")
    renderer.release()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
