"""The control-response ceiling: the SynthPortraits renderer asked again with changed labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aniportraitgan.cameras import Cameras
from aniportraitgan.data.dataset import PortraitDataset, face_path, portrait_path
from aniportraitgan.data.synth import make_tiny_dataset
from aniportraitgan.data.synth_config import SynthConfig
from aniportraitgan.data.synth_worker import SynthWorker
from aniportraitgan.errors import UserError
from aniportraitgan.metrics.response import EXPRESSION_PROBES, POSE_PROBES, data_response_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("ceiling") / "data", num=8, resolution=64)


def test_the_card_gives_back_the_settings_it_was_made_with(data):
    card = json.loads((data / "dataset.json").read_text())
    config = SynthConfig.from_card(card)
    assert config.num == 8 and config.resolution == 64
    assert json.loads(json.dumps(config.card_settings())) == card["synth_settings"]


@pytest.mark.parametrize("card, problem", [
    ({"format": "aniportraitgan-portraits", "num_samples": 3}, "not made by `data synth`"),
    ({"synth_settings": {"generator_version": "0"}}, "version '0'"),
])
def test_a_dataset_no_renderer_can_draw_again_is_named(card, problem):
    with pytest.raises(UserError, match=problem):
        SynthConfig.from_card(card)


def test_render_posed_redraws_the_stored_images(data):
    """Asked with a sample's own labels, the worker draws the person the dataset holds (the body
    model runs on one sample instead of a chunk of 16: a pixel may differ by a level)."""
    ds = PortraitDataset(data, check_files=False)
    worker = SynthWorker(SynthConfig.from_card(ds.card))
    try:
        for k in (0, 5):
            L = {key: torch.as_tensor(np.asarray(ds.labels[key][k:k + 1])).float()
                 for key in ("z_id", "z_exp", "z_pose", "c2w", "cam_fov", "face_c2w", "face_fov")}
            out = worker.body(L["z_id"], L["z_exp"], L["z_pose"])
            for cams, size, path in ((Cameras(L["c2w"], L["cam_fov"]), 64, portrait_path(data, k)),
                                     (Cameras(L["face_c2w"], L["face_fov"]), 32, face_path(data, k))):
                img = worker.render_posed(k, out, cams, size)[0].astype(float)
                stored = np.asarray(Image.open(path).convert("RGB"), dtype=float)
                diff = np.abs(img - stored)
                assert diff.mean() < 0.01 and diff.max() <= 2, (k, path, diff.mean(), diff.max())
    finally:
        worker.close()


def test_the_data_moves_what_each_probe_names(data):
    ds = PortraitDataset(data, check_files=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = data_response_metrics(ds, 4, 64, 64, progress=False)
        assert torch.get_num_threads() == 2  # the renderer's one-thread setting does not leak
    finally:
        torch.set_num_threads(before)
    assert set(m) == {f"response_{p}{s}_real" for p in [*EXPRESSION_PROBES, *POSE_PROBES] for s in ("", "_in", "_out")}
    for p in ("jawOpen", "eyeBlink", "smile", "head_turn", "shoulder_shrug"):
        assert m[f"response_{p}_in_real"] > 2.0, (p, m)  # 8-bit levels: the renderer moved the mesh
        assert m[f"response_{p}_real"] > 3.0, (p, m)  # ... there, more than elsewhere
    # Deterministic: the same samples give the same numbers.
    assert data_response_metrics(ds, 4, 64, 64, progress=False) == m


def test_evaluate_skips_the_ceiling_where_there_is_no_renderer(data, tmp_path, monkeypatch):
    import shutil

    from aniportraitgan.metrics import evaluate as evaluate_module
    from aniportraitgan.render import RenderBackendError

    photos = tmp_path / "photos"
    shutil.copytree(data, photos)
    card = json.loads((photos / "dataset.json").read_text())
    del card["synth_settings"]  # as a photo dataset's card: nothing to draw again
    (photos / "dataset.json").write_text(json.dumps(card))
    values, note = evaluate_module._data_response(PortraitDataset(photos), 4, 64, 64, False)
    assert values == {} and note.startswith("not measured") and "data synth" in note

    def no_gl(*args, **kwargs):
        raise RenderBackendError("cannot create a headless EGL OpenGL context (test)")

    monkeypatch.setattr(evaluate_module, "data_response_metrics", no_gl)
    values, note = evaluate_module._data_response(PortraitDataset(data), 4, 64, 64, False)
    assert values == {} and "EGL" in note
