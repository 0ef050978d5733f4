"""Dataset format: labels round trip, PortraitDataset items/resizing, errors, samplers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aniportraitgan.data.dataset import (
    LABELS_FILE,
    PortraitDataset,
    build_card,
    face_path,
    load_labels,
    portrait_path,
    save_labels,
    write_card,
)
from aniportraitgan.latents import LabelSampler, SamplerConfig
from aniportraitgan.errors import AssetError, InputError


def fake_labels(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "index": np.arange(n, dtype=np.int64),
        "z_id": rng.normal(size=(n, 40)).astype(np.float32),
        "z_exp": rng.uniform(size=(n, 52)).astype(np.float32),
        "z_pose": rng.normal(scale=0.2, size=(n, 6, 3)).astype(np.float32),
        "cam_yaw": rng.uniform(-0.5, 0.5, n).astype(np.float32),
        "cam_pitch": rng.uniform(-0.2, 0.2, n).astype(np.float32),
        "cam_radius": rng.uniform(1.5, 1.7, n).astype(np.float32),
        "cam_fov": np.full(n, 20.0, np.float32),
        "cam_look_at": rng.normal(scale=0.01, size=(n, 3)).astype(np.float32),
        "landmarks": rng.uniform(0, 32, size=(n, 68, 2)).astype(np.float32),
        "face_landmarks": rng.uniform(0, 16, size=(n, 68, 2)).astype(np.float32),
    }


def write_fake_dataset(root, n=6, res=32, face_res=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = fake_labels(n, seed)
    (root / "portraits").mkdir(parents=True)
    (root / "faces").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(portrait_path(root, i))
        Image.fromarray(rng.integers(0, 256, (face_res, face_res, 3), dtype=np.uint8)).save(face_path(root, i))
    save_labels(root / LABELS_FILE, labels)
    write_card(root, build_card(labels, res, face_res, "test", "0"))
    return labels


def test_labels_round_trip(tmp_path):
    labels = fake_labels(5)
    save_labels(tmp_path / "l.npz", labels)
    back = load_labels(tmp_path / "l.npz")
    assert set(back) == set(labels)
    for k in labels:
        np.testing.assert_array_equal(back[k], labels[k])
        assert back[k].dtype == labels[k].dtype


def test_dataset_items_and_resize(tmp_path):
    labels = write_fake_dataset(tmp_path)
    ds = PortraitDataset(tmp_path)
    assert len(ds) == 6
    item = ds[2]
    assert item["image"].shape == (3, 32, 32) and item["face"].shape == (3, 16, 16)
    raw = np.asarray(Image.open(portrait_path(tmp_path, 2)))
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), raw / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(item["z_exp"].numpy(), labels["z_exp"][2])
    assert item["z_pose"].shape == (6, 3) and int(item["index"]) == 2
    small = PortraitDataset(tmp_path, resolution=16, face_resolution=8)[2]
    assert small["image"].shape == (3, 16, 16) and small["face"].shape == (3, 8, 8)
    assert small["image"].min() >= -1 and small["image"].max() <= 1
    # Antialiased downsampling of noise averages neighbours (plain subsampling would keep the std).
    assert small["image"].std() < 0.6 * item["image"].std()
    assert abs(float(small["image"].mean() - item["image"].mean())) < 0.02
    np.testing.assert_allclose(small["landmarks"].numpy(), labels["landmarks"][2] * 0.5, rtol=1e-6)
    np.testing.assert_allclose(small["face_landmarks"].numpy(), labels["face_landmarks"][2] * 0.5, rtol=1e-6)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["z_id"].shape == (4, 40)


def test_missing_card(tmp_path):
    write_fake_dataset(tmp_path)
    os.remove(tmp_path / "dataset.json")
    with pytest.raises(AssetError, match="dataset.json"):
        PortraitDataset(tmp_path)


def test_missing_image_names_the_file(tmp_path):
    write_fake_dataset(tmp_path)
    os.remove(face_path(tmp_path, 3))
    with pytest.raises(AssetError, match=r"faces/000003\.png"):
        PortraitDataset(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    write_fake_dataset(tmp_path)
    portrait_path(tmp_path, 4).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = PortraitDataset(tmp_path)
    ds[3]
    with pytest.raises(AssetError, match=r"portraits/000004\.png"):
        ds[4]


def test_wrong_size_image(tmp_path):
    write_fake_dataset(tmp_path)
    Image.new("RGB", (20, 20)).save(portrait_path(tmp_path, 1))
    with pytest.raises(AssetError, match=r"000001\.png is 20x20"):
        PortraitDataset(tmp_path)[1]


def test_extra_image_without_label_row(tmp_path):
    write_fake_dataset(tmp_path)
    Image.new("RGB", (32, 32)).save(portrait_path(tmp_path, 17))
    with pytest.raises(AssetError, match=r"000017\.png has no row"):
        PortraitDataset(tmp_path)


def test_labels_row_count_mismatch(tmp_path):
    labels = write_fake_dataset(tmp_path)
    bad = dict(labels)
    bad["z_exp"] = bad["z_exp"][:-1]
    np.savez(tmp_path / LABELS_FILE, **bad)
    with pytest.raises(AssetError, match="z_exp.*5 rows, expected 6"):
        PortraitDataset(tmp_path)
    short = {k: v[:-1] for k, v in labels.items()}
    save_labels(tmp_path / LABELS_FILE, short)
    with pytest.raises(AssetError, match="5 rows but .*num_samples=6"):
        PortraitDataset(tmp_path)


def test_corrupt_labels_file(tmp_path):
    write_fake_dataset(tmp_path)
    (tmp_path / LABELS_FILE).write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="labels.npz is corrupt"):
        PortraitDataset(tmp_path)


def test_card_format_checked(tmp_path):
    write_fake_dataset(tmp_path)
    card = json.loads((tmp_path / "dataset.json").read_text())
    card["format"] = "something-else"
    (tmp_path / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(AssetError, match="format"):
        PortraitDataset(tmp_path)


def test_card_statistics(tmp_path):
    labels = write_fake_dataset(tmp_path, n=6)
    card = json.loads((tmp_path / "dataset.json").read_text())
    assert card["num_samples"] == 6 and card["resolution"] == 32 and card["face_resolution"] == 16
    st = card["label_statistics"]["cam_yaw"]
    assert st["mean"][0] == pytest.approx(float(labels["cam_yaw"].mean()), abs=1e-5)
    assert st["max"][0] == pytest.approx(float(labels["cam_yaw"].max()), abs=1e-5)


def test_sampler_joint_rows_are_real_rows(tmp_path):
    labels = write_fake_dataset(tmp_path, n=6)
    s = LabelSampler.from_dataset(tmp_path, eps_dim=7)
    out = s.sample(50, generator=torch.Generator().manual_seed(0))
    assert out.z_id.shape == (50, 40) and out.z_exp.shape == (50, 52) and out.z_pose.shape == (50, 6, 3)
    assert out.eps.shape == (50, 7)
    # Joint: every sample is one dataset row for all components.
    for b in range(50):
        row = int(np.argmin(np.abs(labels["z_id"] - out.z_id[b].numpy()).sum(1)))
        np.testing.assert_allclose(out.z_id[b].numpy(), labels["z_id"][row])
        np.testing.assert_allclose(out.z_exp[b].numpy(), labels["z_exp"][row])
        np.testing.assert_allclose(out.cam_yaw[b].item(), labels["cam_yaw"][row])
    cams = out.cameras()
    assert cams.c2w.shape == (50, 4, 4)


def test_sampler_rows_are_the_exact_labels_even_with_jitter(tmp_path):
    labels = write_fake_dataset(tmp_path, n=6)
    eps = torch.randn(3, 5)
    out = LabelSampler.from_dataset(tmp_path, jitter=0.1).rows([4, 0, 4], eps)
    for name in ("z_id", "z_exp", "z_pose", "cam_yaw", "cam_pitch", "cam_radius"):
        np.testing.assert_array_equal(getattr(out, name).numpy(), labels[name][[4, 0, 4]].astype(np.float32))
    assert out.eps is eps


def test_sampler_independent_and_jitter(tmp_path):
    labels = write_fake_dataset(tmp_path, n=6)
    ds = PortraitDataset(tmp_path)
    s = LabelSampler.from_dataset(ds, mode="independent")
    out = s.sample(200, generator=torch.Generator().manual_seed(1))
    rid = [int(np.argmin(np.abs(labels["z_id"] - z.numpy()).sum(1))) for z in out.z_id]
    rexp = [int(np.argmin(np.abs(labels["z_exp"] - z.numpy()).sum(1))) for z in out.z_exp]
    assert np.mean(np.array(rid) == np.array(rexp)) < 0.5  # rows are drawn independently
    assert out.eps is None
    j = LabelSampler.from_dataset(ds, jitter=0.1).sample(200, generator=torch.Generator().manual_seed(1))
    assert j.z_exp.min() >= 0 and j.z_exp.max() <= 1
    d = (j.z_id[:, None, :] - torch.from_numpy(labels["z_id"])[None]).abs().amax(-1).min(1).values
    assert (d > 0).all() and (d < 1.0).all()  # near a real row, but not on it
    a = LabelSampler.from_dataset(ds).sample(8, generator=torch.Generator().manual_seed(3))
    b = LabelSampler.from_dataset(ds).sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.z_id, b.z_id)


def test_sampler_errors(tmp_path):
    with pytest.raises(InputError, match="mode"):
        LabelSampler(fake_labels(3), SamplerConfig(mode="bogus"))
    lab = fake_labels(3)
    del lab["z_pose"]
    with pytest.raises(InputError, match="z_pose"):
        LabelSampler(lab)
    with pytest.raises(AssetError, match="dataset.json"):
        LabelSampler.from_dataset(tmp_path)
