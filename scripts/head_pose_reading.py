"""How much head pose can R read, from real faces made coarse and from a generator's faces?

`head_pose_deg` (docs/evaluation.md) is R's view error on generated faces. A large error can
mean that the head did not turn, or that R cannot read the face it is shown. This separates
the two: R on the dataset's own faces blurred by an area downsample to a few sizes and back
(how much detail R needs), a constant guess (the mean view: what reading nothing scores), and,
for a checkpoint, the correlation, slope and bias of R's yaw and pitch against the asked ones
(a head that turns half as far as asked reads as slope 0.5; a face R cannot read as corr 0).

    python scripts/head_pose_reading.py DATA R.safetensors [--ckpt CKPT] [--num 512]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import face_angles_from_main, matching_face_cameras
from aniportraitgan.data.dataset import PortraitDataset
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.generator import RenderOptions
from aniportraitgan.inference import load_inference_model
from aniportraitgan.latents import LabelSampler
from aniportraitgan.metrics.recon_errors import view_angle_error_deg


def _line(name: str, asked: torch.Tensor, read: torch.Tensor) -> str:
    a, r = asked.double() - asked.double().mean(), read.double() - read.double().mean()
    corr = float((a * r).sum() / (a.norm() * r.norm()))
    slope = float((a * r).sum() / a.square().sum())
    bias = float((read.double() - asked.double()).mean())
    return f"{name}: corr {corr:.2f}, slope {slope:.2f}, bias {np.degrees(bias):+.1f} deg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("facerecon")
    ap.add_argument("--ckpt", default=None, help="a generator to read too (anything `evaluate --ckpt` takes)")
    ap.add_argument("--num", type=int, default=512)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    body = PortraitBodyModel.load()
    R = FaceRecon.load(args.facerecon)
    H = args.resolution
    ds = PortraitDataset(args.data, H, H, check_files=False)
    n = min(args.num, len(ds))
    items = [ds[i] for i in range(n)]
    faces = torch.stack([it["face"] for it in items])
    view = torch.stack([torch.stack([it["face_yaw"], it["face_pitch"]]) for it in items])
    with torch.no_grad():
        for size in sorted({H, 32, 16, 8}, reverse=True):
            f = faces if size == H else F.interpolate(F.interpolate(faces, size=size, mode="area"), size=H, mode="bilinear")
            v = R(f)["view"]
            err = view_angle_error_deg(v[:, 0], v[:, 1], view[:, 0], view[:, 1]).mean()
            print(f"real faces through {size} px: head_pose_deg {err:.1f}; {_line('yaw', view[:, 0], v[:, 0])}; "
                  f"{_line('pitch', view[:, 1], v[:, 1])}")
    mean = view.mean(0, keepdim=True).expand_as(view)
    print(f"the mean view as a constant guess: {view_angle_error_deg(mean[:, 0], mean[:, 1], view[:, 0], view[:, 1]).mean():.1f} deg")
    if args.ckpt is None:
        return
    G = load_inference_model(args.ckpt, body_model=body).generator
    sampler = LabelSampler.from_dataset(args.data)
    asked, read = [], []
    with torch.no_grad():
        for s in range(0, n, 16):
            rows = list(range(s, min(n, s + 16)))
            lat = sampler.rows(rows, torch.randn(len(rows), G.config.noise_dim, generator=torch.Generator().manual_seed(s)))
            cams = lat.cameras()
            posed = body(lat.z_id, lat.z_exp, lat.z_pose)
            face_cams = matching_face_cameras(cams, posed.head_center, posed.head_rotation)
            asked.append(torch.stack(face_angles_from_main(cams, posed.head_center, posed.head_rotation), 1))
            read.append(R(G(lat, cams, face_cams, options=RenderOptions(8, H, 1, 1.0)).face)["view"])
    a, r = torch.cat(asked), torch.cat(read)
    err = view_angle_error_deg(r[:, 0], r[:, 1], a[:, 0], a[:, 1]).mean()
    print(f"{args.ckpt}: head_pose_deg {err:.1f}; {_line('yaw', a[:, 0], r[:, 0])}; {_line('pitch', a[:, 1], r[:, 1])}")


if __name__ == "__main__":
    main()
