"""Animation with a tiny untrained generator: videos, cache agreement, CLI errors, generate, demo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aniportraitgan import inference
from aniportraitgan.animation.animate import GeneratorFrames, animate, generator_source
from aniportraitgan.animation import preset
from aniportraitgan.animation.video import read_video
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cli import main
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig
from aniportraitgan.inference import load_inference_model
from aniportraitgan.artefacts import export_generator
from aniportraitgan.artefacts import loading as artefacts_loading

RES = 32


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load(device="cpu")


@pytest.fixture(scope="module")
def ckpt(body, tmp_path_factory):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.tiny(), body)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    # stage 2: frames read U's super-resolved maps, the part the identity cache holds
    export_generator(path, g.state_dict(), g.config.to_dict(), stage=2)
    return path


@pytest.fixture(scope="module")
def model(ckpt, body):
    return load_inference_model(ckpt, "cpu", body_model=body)


def test_cached_and_uncached_frames_agree(model):
    kf = preset("head_turn")[:3]
    kf.camera[:, 0] = torch.tensor([0.0, 0.2, -0.3])
    cached = GeneratorFrames(model, 3, resolution=16, use_cache=True)
    plain = GeneratorFrames(model, 3, resolution=16, use_cache=False)
    assert cached.cache is not None and plain.cache is None
    a, b = cached.render(kf), plain.render(kf)
    torch.testing.assert_close(a.portrait, b.portrait, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.portrait_depth, b.portrait_depth, atol=1e-5, rtol=0)
    # frames rendered in one batch equal frames rendered one by one
    single = torch.cat([cached.render(kf[i:i + 1]).portrait for i in range(len(kf))])
    torch.testing.assert_close(a.portrait, single, atol=1e-5, rtol=0)


def test_face_view_renders_the_face_camera(model):
    kf = preset("smile")[:2]
    face = GeneratorFrames(model, 1, resolution=16, view="face")
    frames = face(kf)
    assert frames.shape == (2, 16, 16, 3) and frames.dtype == np.uint8
    # the same pixels as the face output of a full render
    full = GeneratorFrames(model, 1, resolution=16).render(kf, face_resolution=16).face
    expect = ((full.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    assert np.abs(frames.astype(np.float64) - expect).max() <= 1.0
    with pytest.raises(InputError, match="view"):
        GeneratorFrames(model, 1, resolution=16, view="side")


def test_animate_writes_the_requested_frames(model, tmp_path):
    kf = preset("nod").interpolate(1)  # 4 keyframes -> 7 frames
    src = generator_source(model, 1, resolution=RES)
    res = animate(src, kf, tmp_path / "a.mp4", fps=10, batch_size=3, progress=False)
    v = read_video(res.path)
    assert res.frames == len(kf) == 7 and v.shape == (7, RES, RES, 3)
    # the encoded frames are the rendered ones (up to H.264 loss)
    direct = src(kf[:1])[0].astype(float)
    assert np.abs(v[0].astype(float) - direct).mean() < 6.0
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_side_by_side_shows_the_body_model(model, tmp_path):
    pytest.importorskip("moderngl")
    src = generator_source(model, 0, resolution=RES, side_by_side=True)
    frames = src(preset("smile")[:2])
    assert frames.shape == (2, RES, 2 * RES, 3)
    left = frames[:, :, :RES]
    assert (left < 200).any(axis=-1).mean() > 0.05  # the shaded body covers part of the image


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_animate_from_files(ckpt, tmp_path, capsys):
    pose = np.zeros((4, 6, 3), np.float32)
    pose[:, 3, 1] = np.linspace(0, 0.5, 4)  # head turn, axis-angle
    np.save(tmp_path / "pose.npy", pose)
    cam = np.zeros((1, 2), np.float32)  # one frame: held for the whole clip
    cam[0, 0] = 0.2
    np.save(tmp_path / "cam.npy", cam)
    out = tmp_path / "clip.mp4"
    code, stdout, err = _cli(["animate", "--ckpt", str(ckpt), "--seed", "2", "--out", str(out),
                              "--pose", str(tmp_path / "pose.npy"), "--camera", str(tmp_path / "cam.npy"),
                              "--resolution", str(RES), "--fps", "12", "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    assert read_video(out).shape == (4, RES, RES, 3)
    assert "4 frames" in stdout


def test_cli_euler_pose_and_orbit_and_gif(ckpt, tmp_path, capsys):
    np.save(tmp_path / "euler.npy", np.zeros((2, 6, 3), np.float32))
    out = tmp_path / "clip.gif"
    code, _, err = _cli(["animate", "--ckpt", str(ckpt), "--out", str(out), "--pose", str(tmp_path / "euler.npy"),
                         "--pose-format", "euler-zyx", "--frames-between", "2", "--orbit", "20",
                         "--resolution", str(RES), "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    assert out.exists() and read_video(out).shape[1:] == (RES, RES, 3)


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("wrong_shape", np.zeros((3, 50), np.float32), "shape"),
        ("nan", np.full((3, 52), np.nan, np.float32), "NaN"),
        ("range", np.full((3, 52), 1.5, np.float32), r"\[0, 1\]"),
    ],
)
def test_cli_bad_keyframes_leave_nothing(ckpt, tmp_path, capsys, monkeypatch, name, array, message):
    np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "out" / "v.mp4"
    out.parent.mkdir()
    # validation happens before the checkpoint is even loaded
    monkeypatch.setattr(inference, "load_inference_model", lambda *a, **k: pytest.fail("model loaded"))
    code, _, err = _cli(["animate", "--ckpt", str(ckpt), "--out", str(out),
                         "--expression", str(tmp_path / f"{name}.npy"), "--quiet"], capsys)
    assert code == 2
    assert "error:" in err and __import__("re").search(message, err), err
    assert list(out.parent.iterdir()) == []


def test_cli_mismatched_lengths_and_bad_pose_angle(ckpt, tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.zeros((3, 52), np.float32))
    np.save(tmp_path / "c.npy", np.zeros((4, 2), np.float32))
    pose = np.zeros((2, 6, 3), np.float32)
    pose[0, 3] = [0.0, 4.0, 0.0]
    np.save(tmp_path / "p.npy", pose)
    for extra, message in ((["--expression", str(tmp_path / "e.npy"), "--camera", str(tmp_path / "c.npy")], "frame counts"),
                           (["--pose", str(tmp_path / "p.npy")], "exceeds pi")):
        code, _, err = _cli(["animate", "--ckpt", str(ckpt), "--out", str(tmp_path / "v.mp4"), *extra], capsys)
        assert code == 2 and message in err, err
    assert not (tmp_path / "v.mp4").exists()


def test_cli_checkpoint_of_another_config(ckpt, tmp_path, capsys):
    from aniportraitgan.artefacts import read_generator_file

    weights, _ = read_generator_file(ckpt)
    other = export_generator(tmp_path / "other.safetensors", weights, GeneratorConfig.tiny(num_levels=8).to_dict())
    out = tmp_path / "v.mp4"
    code, _, err = _cli(["animate", "--ckpt", str(other), "--out", str(out), "--preset", "blink",
                         "--device", "cpu", "--quiet"], capsys)
    assert code == 2 and "does not fit" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.safetensors"]


def test_cli_unwritable_output_fails_before_rendering(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inference, "load_inference_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "missing" / "v.mp4", "does not exist"),
                         (tmp_path / "file" / "v.mp4", "does not exist or is not a folder"),
                         (tmp_path / "v.avi", ".mp4 or .gif")):
        code, _, err = _cli(["animate", "--ckpt", str(ckpt), "--out", str(out), "--preset", "smile"], capsys)
        assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_interrupt_during_rendering_leaves_nothing(model, tmp_path):
    src = GeneratorFrames(model, 0, resolution=RES)
    calls = []

    def flaky(kf):
        calls.append(len(kf))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return src(kf)

    with pytest.raises(KeyboardInterrupt):
        animate(flaky, preset("smile").interpolate(1), tmp_path / "v.mp4", batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == [] and calls == [2, 2]
    with pytest.raises(InputError, match="batch"):
        animate(src, preset("smile"), tmp_path / "v.mp4", batch_size=0, progress=False)


def test_cli_generate_writes_all_outputs(ckpt, tmp_path, capsys):
    out = tmp_path / "gen"
    code, _, err = _cli(["generate", "--ckpt", str(ckpt), "--seeds", "4,6", "--out", str(out), "--views", "2",
                         "--resolution", "16", "--face-resolution", "8", "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    from PIL import Image

    for s in (4, 6):
        stem = out / f"seed{s:04d}"
        assert Image.open(f"{stem}_portrait.png").size == (16, 16)
        assert Image.open(f"{stem}_face.png").size == (8, 8)
        assert Image.open(f"{stem}_depth.png").size == (16, 16)
        assert Image.open(f"{stem}_views.png").size == (2 * 16, 16)
        d = np.load(f"{stem}_depth.npy")
        assert d.shape == (16, 16) and d.dtype == np.float32
    assert len(list(out.iterdir())) == 10
    assert not any(p.name.startswith(".") for p in out.iterdir())
    code, _, err = _cli(["generate", "--ckpt", str(ckpt), "--out", str(out), "--views", "1"], capsys)
    assert code == 2 and "--views" in err


def test_demo_falls_back_to_the_body_model(tmp_path, capsys, monkeypatch):
    pytest.importorskip("moderngl")
    monkeypatch.setattr(artefacts_loading, "DEMO_CHECKPOINT", tmp_path / "absent.safetensors")
    calls = []

    def fake_sheet(path):  # the lead's preview is exercised by its own tests; keep this one quick
        calls.append(path)
        from PIL import Image

        Image.new("RGB", (8, 8)).save(path)
        return path

    import aniportraitgan.body.preview as preview

    monkeypatch.setattr(preview, "render_contact_sheet", fake_sheet)
    code, stdout, err = _cli(["demo", "--out", str(tmp_path / "o"), "--frames-between", "0", "--resolution", "32",
                              "--quiet"], capsys)
    assert code == 0, err
    assert "does not exist yet" in stdout and "body model" in stdout
    assert read_video(tmp_path / "o" / "demo.mp4").shape[0] >= 30
    assert calls == [tmp_path / "o" / "demo_controls.png"]


def _demo_with_checkpoint(ckpt, tmp_path, capsys, monkeypatch, short: bool) -> np.ndarray:
    pytest.importorskip("moderngl")
    monkeypatch.setattr(artefacts_loading, "DEMO_CHECKPOINT", ckpt)
    from aniportraitgan.animation import demo as demo_lib

    monkeypatch.setattr(demo_lib, "DEMO_SEEDS", (0,))
    if short:
        monkeypatch.setattr(demo_lib, "demo_keyframes", lambda fb: preset("blink"))
    code, stdout, err = _cli(["demo", "--out", str(tmp_path), "--frames-between", "0", "--resolution", "16",
                              "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    assert "does not exist" not in stdout
    from PIL import Image

    for name in ("demo_controls.png", "demo_face_controls.png"):
        w, h = Image.open(tmp_path / name).size
        assert w > 5 * 16 and h > 4 * 16  # 5 columns, 4 rows
    v = read_video(tmp_path / "demo.mp4")
    assert v.shape[1:] == (16, 32, 3)  # body model | portrait
    return v


def test_demo_with_a_checkpoint_short(ckpt, tmp_path, capsys, monkeypatch):
    assert _demo_with_checkpoint(ckpt, tmp_path, capsys, monkeypatch, short=True).shape[0] == 3


@pytest.mark.slow  # renders the full >= 30-frame demo clip (about 30 s on 2 busy cores)
def test_demo_with_a_checkpoint_full_length(ckpt, tmp_path, capsys, monkeypatch):
    from aniportraitgan.animation.demo import MIN_FRAMES, demo_keyframes

    assert len(demo_keyframes(0)) >= MIN_FRAMES
    assert _demo_with_checkpoint(ckpt, tmp_path, capsys, monkeypatch, short=False).shape[0] >= MIN_FRAMES


def test_body_view_uses_the_generator_cameras(model):
    """The side-by-side body view is drawn from the cameras the generator renders with."""
    pytest.importorskip("moderngl")
    from aniportraitgan.animation.animate import BodyFrames

    R = 64
    z_id, _ = model.identity(4)
    kf = preset("head_turn")[1:2]
    kf.camera[:, 0] = 0.4
    kf.camera[:, 1] = 0.1
    img = BodyFrames(model.body, z_id, R, model.prior.camera)(kf)[0]
    out = model.body(z_id, kf.expression, kf.pose)
    cams = model.cameras(kf.camera[:, 0], kf.camera[:, 1])
    uv, depth = cams.project(out.vertices, R, R)
    assert (depth > 0).all()
    inside = (uv >= 0).all(-1) & (uv < R).all(-1)
    px = uv[inside].long().numpy()
    covered = (img[px[:, 1], px[:, 0]] < 250).any(-1)
    assert covered.mean() > 0.97  # projected vertices land on drawn pixels
    # and the drawing covers little beyond the projected vertices' bounding box
    lo, hi = px.min(0), px.max(0)
    drawn = (img < 250).any(-1)
    outside = drawn.copy()
    outside[max(0, lo[1] - 1):hi[1] + 2, max(0, lo[0] - 1):hi[0] + 2] = False
    assert outside.sum() == 0


def test_latent_prior_from_a_label_sampler():
    from aniportraitgan.latents import LabelSampler
    from aniportraitgan.latents import LatentPrior

    n = 6
    g = np.random.default_rng(0)
    labels = {"z_id": g.normal(size=(n, 40)), "z_exp": g.uniform(size=(n, 52)), "z_pose": np.zeros((n, 6, 3)),
              "cam_yaw": np.zeros(n), "cam_pitch": np.zeros(n), "cam_radius": np.full(n, 1.5),
              "cam_fov": np.full(n, 12.0), "cam_look_at": np.tile([0.0, 0.1, 0.0], (n, 1))}
    p = LatentPrior.from_sampler(LabelSampler(labels))
    np.testing.assert_allclose(p.z_id_mean.numpy(), labels["z_id"].mean(0), atol=1e-6)
    np.testing.assert_allclose(p.z_id_std.numpy(), labels["z_id"].std(0), atol=1e-6)
    assert p.camera.radius == pytest.approx(1.5) and p.camera.fov_deg == pytest.approx(12.0)
    assert p.camera.look_at == pytest.approx((0.0, 0.1, 0.0))
    q = LatentPrior.from_json(p.to_json(), 40)
    torch.testing.assert_close(q.z_id_std, p.z_id_std)
