"""SynthPortraits: determinism, resume, label consistency with the images, dataset reading."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from aniportraitgan.data import PortraitDataset
from aniportraitgan.latents import LabelSampler
from aniportraitgan.data.dataset import LABELS_FILE, face_path, load_labels, portrait_path
from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.render import RenderBackendError

synth = pytest.importorskip("aniportraitgan.data.synth")


def _require_gl():
    from aniportraitgan.render import MeshRenderer

    try:
        MeshRenderer(samples=0).release()
    except RenderBackendError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _require_gl()
    root = tmp_path_factory.mktemp("synth") / "tiny"
    t0 = time.time()
    synth.make_tiny_dataset(root, num=64, resolution=64, seed=3)
    return root, time.time() - t0


def _bytes(root, i, face=False):
    return (face_path(root, i) if face else portrait_path(root, i)).read_bytes()


def test_tiny_dataset_builds_in_seconds(tiny):
    root, seconds = tiny
    assert seconds < 45, f"64 samples at 64x64 took {seconds:.1f} s"
    ds = PortraitDataset(root)
    assert len(ds) == 64
    item = ds[5]
    assert item["image"].shape == (3, 64, 64) and item["face"].shape == (3, 32, 32)
    assert item["z_id"].shape == (40,) and item["z_exp"].shape == (52,) and item["z_pose"].shape == (6, 3)
    card = json.loads((root / "dataset.json").read_text())
    assert card["num_samples"] == 64 and card["resolution"] == 64 and card["face_resolution"] == 32
    assert card["generator"] == "aniportraitgan.data.synth" and card["complete"] is True
    assert "head_yaw" in card["priors"] and "z_exp" in card["label_statistics"]


def test_make_tiny_dataset_reuses_its_first_build(tiny, tmp_path):
    root, _ = tiny
    t0 = time.time()
    copy = synth.make_tiny_dataset(tmp_path / "again", num=64, resolution=64, seed=3)
    assert time.time() - t0 < 5
    assert _bytes(copy, 10) == _bytes(root, 10)
    assert len(PortraitDataset(copy)) == 64
    with pytest.raises(UserError, match="not empty"):
        synth.make_tiny_dataset(tmp_path / "again", num=64, resolution=64, seed=3)


def test_same_seed_same_bytes(tiny, tmp_path):
    root, _ = tiny
    # A smaller dataset with the same seed: the shared samples are byte-identical.
    synth.synthesize(tmp_path / "a", synth.SynthConfig(num=6, resolution=64, seed=3, workers=1, progress=False))
    for i in range(6):
        assert _bytes(tmp_path / "a", i) == _bytes(root, i)
        assert _bytes(tmp_path / "a", i, face=True) == _bytes(root, i, face=True)
    a, b = load_labels(tmp_path / "a" / LABELS_FILE), load_labels(root / LABELS_FILE)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k][:6])
    synth.synthesize(tmp_path / "b", synth.SynthConfig(num=2, resolution=64, seed=4, workers=1, progress=False))
    assert _bytes(tmp_path / "b", 0) != _bytes(root, 0)


def test_landmarks_fall_on_the_face(tiny):
    root, _ = tiny
    ds = PortraitDataset(root)
    lab = ds.labels
    R, Rf = 64, 32
    on_body, near = [], []
    for k in range(len(ds)):
        img = np.asarray(Image.open(portrait_path(root, k))).astype(int)
        lm = lab["landmarks"][k]
        cols = np.clip(np.floor(lm[:, 0]).astype(int), 0, R - 1)
        rows = np.clip(np.floor(lm[:, 1]).astype(int), 0, R - 1)
        on_body.append(np.mean(img[rows, cols].sum(-1) < 3 * 250))  # not the white background
        # The landmark centroid is close to the projected head centre, and the face spans a
        # plausible part of the image.
        cam = torch.from_numpy(lab["c2w"][k])[None]
        from aniportraitgan.cameras import Cameras

        uv, depth = Cameras(cam, torch.tensor([float(lab["cam_fov"][k])])).project(torch.from_numpy(lab["head_center"][k])[None, None], R, R)
        near.append(np.linalg.norm(lm.mean(0) - uv[0, 0].numpy()) / R)
        width = lm[:, 0].max() - lm[:, 0].min()
        assert 0.04 * R < width < 0.4 * R
        assert np.all((lm > 0) & (lm < R))
        flm = lab["face_landmarks"][k]
        assert np.linalg.norm(flm.mean(0) - Rf / 2) < 0.2 * Rf  # face camera looks at the head
        fimg = np.asarray(Image.open(face_path(root, k))).astype(int)
        fc = np.clip(np.floor(flm).astype(int), 0, Rf - 1)
        face_on = np.mean(fimg[fc[:, 1], fc[:, 0]].sum(-1) < 3 * 250)
        if abs(lab["face_yaw"][k]) < np.radians(25):
            # Near-frontal views: all but silhouette points land on the head. (In profile
            # views the far half of the face is hidden and its points fall on background.)
            assert face_on > 0.9 and on_body[-1] > 0.9
    assert np.mean(on_body) > 0.95
    assert max(near) < 0.1


def test_landmarks_agree_with_a_fresh_projection(tiny):
    """Labels equal the cameras module's projection of the body model's landmarks."""
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.cameras import look_at_cameras

    root, _ = tiny
    lab = load_labels(root / LABELS_FILE)
    body = PortraitBodyModel.load()
    k = slice(0, 4)
    with torch.no_grad():
        out = body(torch.from_numpy(lab["z_id"][k]), torch.from_numpy(lab["z_exp"][k]), torch.from_numpy(lab["z_pose"][k]))
        cams = look_at_cameras(*(torch.from_numpy(lab[n][k]) for n in ("cam_yaw", "cam_pitch", "cam_radius", "cam_fov", "cam_look_at")))
        uv, _ = cams.project(out.landmarks, 64, 64)
    np.testing.assert_allclose(uv.numpy(), lab["landmarks"][k], atol=1e-3)
    np.testing.assert_allclose(cams.c2w.numpy(), lab["c2w"][k], atol=1e-5)


def test_label_priors_look_like_portraits(tiny):
    root, _ = tiny
    lab = load_labels(root / LABELS_FILE)
    assert np.all(np.abs(lab["cam_yaw"]) <= np.radians(30) + 1e-6)
    assert np.all(np.abs(lab["cam_pitch"]) <= np.radians(15) + 1e-6)
    assert np.all((lab["z_exp"] >= 0) & (lab["z_exp"] <= 1))
    assert np.median(lab["z_exp"].max(1)) < 0.6  # mostly near neutral
    assert lab["z_exp"].max() > 0.5  # some strong ones
    head_angle = np.linalg.norm(lab["z_pose"][:, 0] + lab["z_pose"][:, 3], axis=1)
    assert head_angle.max() < np.radians(45)
    assert lab["long_hair"].any() and not lab["long_hair"].all()


def test_resume_fills_only_missing(tiny, tmp_path):
    root, _ = tiny
    cfg = synth.SynthConfig(num=20, resolution=64, seed=3, workers=1, progress=False)
    d = tmp_path / "r"
    synth.synthesize(d, cfg)
    labels0 = load_labels(d / LABELS_FILE)
    os.remove(portrait_path(d, 2))
    os.remove(face_path(d, 7))
    os.remove(portrait_path(d, 17))
    os.remove(d / LABELS_FILE)
    before = {p: p.stat().st_mtime_ns for p in (d / "portraits").iterdir()}
    time.sleep(0.02)
    rep = synth.synthesize(d, cfg)
    assert rep.rendered == 3
    for p, t in before.items():
        assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    for i in (2, 17):
        assert _bytes(d, i) == _bytes(root, i)
    assert _bytes(d, 7, face=True) == _bytes(root, 7, face=True)
    labels1 = load_labels(d / LABELS_FILE)
    for k in labels0:
        np.testing.assert_array_equal(labels0[k], labels1[k])
    # Growing the dataset renders only the new samples.
    rep = synth.synthesize(d, synth.SynthConfig(num=24, resolution=64, seed=3, workers=1, progress=False))
    assert rep.rendered == 4 and len(PortraitDataset(d)) == 24


def test_other_settings_refused(tiny, tmp_path):
    d = tmp_path / "s"
    synth.synthesize(d, synth.SynthConfig(num=2, resolution=64, seed=3, workers=1, progress=False))
    with pytest.raises(UserError, match="seed"):
        synth.synthesize(d, synth.SynthConfig(num=2, resolution=64, seed=4, workers=1, progress=False))
    with pytest.raises(UserError, match="beyond --num 1"):
        synth.synthesize(d, synth.SynthConfig(num=1, resolution=64, seed=3, workers=1, progress=False))
    other = tmp_path / "real"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"format": "aniportraitgan-portraits", "num_samples": 0}))
    with pytest.raises(UserError, match="did not make"):
        synth.synthesize(other, synth.SynthConfig(num=2, resolution=64, seed=3, workers=1, progress=False))


def test_corrupted_synth_image_is_reported(tiny, tmp_path):
    d = tmp_path / "c"
    synth.synthesize(d, synth.SynthConfig(num=3, resolution=64, seed=3, workers=1, progress=False))
    face_path(d, 1).write_bytes(b"broken")
    with pytest.raises(AssetError, match=r"faces/000001\.png"):
        PortraitDataset(d)[1]


def test_sampler_from_synth_dataset(tiny):
    root, _ = tiny
    s = LabelSampler.from_dataset(root, eps_dim=4)
    out = s.sample(8, generator=torch.Generator().manual_seed(0))
    cams = out.cameras()
    assert cams.c2w.shape == (8, 4, 4) and out.eps.shape == (8, 4)


def test_cli_synth_and_preview(tiny, tmp_path):
    from aniportraitgan.cli import main

    root, _ = tiny
    assert main(["data", "preview", str(root), "--out", str(tmp_path / "grid.png"), "--num", "4", "--cols", "2", "--tile", "32"]) == 0
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (64, 128)
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--num", "2", "--resolution", "32", "--workers", "1", "--no-progress"]) == 0
    assert len(PortraitDataset(tmp_path / "x")) == 2
    assert main(["data", "preview", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")]) == 2
    assert main(["data", "synth", "--out", str(tmp_path / "y"), "--num", "2", "--resolution", "8"]) == 2


@pytest.mark.slow  # reason: starts two worker processes (torch import + GL context each), ~15 s on 2 cores
def test_two_workers_give_the_same_bytes(tiny, tmp_path):
    root, _ = tiny
    synth.synthesize(tmp_path / "w", synth.SynthConfig(num=40, resolution=64, seed=3, workers=2, progress=False))
    for i in range(40):
        assert _bytes(tmp_path / "w", i) == _bytes(root, i)
        assert _bytes(tmp_path / "w", i, face=True) == _bytes(root, i, face=True)
