"""The Gradio page of ``aniportraitgan serve``: every control of ``WebRenderer`` as a widget.

Layout: tabs for the image (with its status line and download), the preset animation and video
driving on the left; identity, ψ, camera, size, camera angles, head, shoulders and
expressions on the right. The two columns stack on a narrow (phone) screen.

Events go through Gradio's queue: renders share one concurrency slot (``concurrency``), videos
have their own, and the generator itself runs on one thread, one call at a time
(``WebRenderer``), so a long video yields to single frames between its batches. A dragged slider
re-renders while frames are faster than ``LIVE_MS`` (only the newest pending value runs),
otherwise on release. Bad values raise ``gr.Error`` with the renderer's message, which the page
shows as a notice.

Offline: no analytics, no share link, no server-side rendering, fonts from Gradio's own
package; the page makes no request beyond the server it came from (checked by the browser test).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from pathlib import Path

import torch

from aniportraitgan.animation import ARKIT_NAMES, PRESET_NAMES
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.inference import load_identity, load_inference_model
from aniportraitgan.webapp.driving import MAX_SECONDS, drive
from aniportraitgan.webapp.render import (
    DEFAULT_FRAMES_BETWEEN,
    EXPRESSIONS,
    LIVE_MS,
    MAX_FRAMES_BETWEEN,
    MAX_SEED,
    RANGES,
    VIDEO_FPS,
    VIEWS,
    Controls,
    WebRenderer,
)

log = logging.getLogger(__name__)

EXAMPLE_SEEDS = (0, 3, 7, 12, 21, 42)
DEFAULT_PRESET = "smile"
SEED_CHOICE = "(the seed above)"  # the identity picker's entry for "no identity file"
ANGLE_LABELS = {
    "yaw": "camera yaw", "pitch": "camera pitch",
    "head_turn": "head turn", "head_nod": "head nod", "head_tilt": "head tilt", "shrug": "shoulder shrug",
}
CSS = """
#portrait .image-container > button, #portrait .image-frame { width: 100%; height: 100%; }
#portrait img { width: 100%; height: 100%; object-fit: contain; }
#examples { max-height: 150px; }
#status p { margin: 0; font-size: 0.9em; }
@media (max-width: 640px) { .gradio-container { padding: 4px !important; } }
"""
# Browser sessions whose page state the server keeps (about 0.25 MB each, least recent dropped;
# Gradio's default of 10,000 would allow gigabytes), and worker threads for the handlers.
SESSIONS = 256
WORKER_THREADS = 8
MAX_UPLOAD = "200mb"  # a driving video


def gradio():
    """Gradio, imported with its analytics and telemetry off; a UserError names the extra."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The queue keeps a local record of past events (for its monitoring page) and summarises all
    # of them with pandas after every event: 10,000 by default, a cost that grows with uptime.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "256")
    try:
        import gradio as gr
    except ModuleNotFoundError as exc:
        raise UserError(f"the web app needs Gradio ({exc}): pip install 'aniportraitgan[web]'") from None
    return gr


def _status(r) -> str:
    c = r.controls
    h, w = r.image.shape[:2]
    timing = f"{r.ms:.0f} ms" + (" (cached)" if r.cached else "")
    who = f"identity {c.identity}" if c.identity else f"seed {c.seed} · ψ {c.psi:.2f}"
    return f"{w}×{h} {c.view} · {who} · {timing}"


def build_app(renderer: WebRenderer, concurrency: int = 1, queue_size: int = 64, examples=EXAMPLE_SEEDS):
    """The ``gr.Blocks`` app for ``renderer`` (queue set up; not launched)."""
    gr = gradio()

    def fail(exc: Exception):
        if isinstance(exc, (InputError, UserError, AssetError)):
            return gr.Error(str(exc), title="Bad input")
        log.exception("render failed")
        return gr.Error(f"{type(exc).__name__}: {exc}", title="Render failed")

    thumbs, thumb_seeds = [], []
    for s in examples:
        try:
            thumbs.append((str(renderer.render(Controls(seed=s)).path), f"seed {s}"))
            thumb_seeds.append(s)
        except Exception as exc:  # noqa: BLE001 - the page still works without thumbnails
            log.warning("example identity %s not rendered: %s", s, exc)

    with gr.Blocks(title="AniPortraitGAN", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(f"## AniPortraitGAN\n{renderer.describe()}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Tabs():
                    with gr.Tab("Image", id="image-tab", elem_id="image-tab"):
                        image = gr.Image(label="portrait", type="filepath", format="png", interactive=False,
                                         buttons=["download", "fullscreen"], elem_id="portrait", height=420)
                        status = gr.Markdown(elem_id="status")
                        png = gr.DownloadButton("Download PNG", size="sm", elem_id="download-png")
                    with gr.Tab("Animation", id="animation-tab", elem_id="animation-tab"):
                        with gr.Row():
                            preset = gr.Dropdown(list(PRESET_NAMES), value=DEFAULT_PRESET, label="preset",
                                                 elem_id="preset", min_width=120)
                            between = gr.Slider(0, MAX_FRAMES_BETWEEN, value=DEFAULT_FRAMES_BETWEEN, step=1,
                                                label="frames between keyframes", elem_id="frames-between",
                                                min_width=120)
                            fps = gr.Slider(*VIDEO_FPS, value=25, step=1, label="fps", elem_id="fps", min_width=120)
                        make_video = gr.Button("Render video", variant="primary", elem_id="render-video")
                        video = gr.Video(label="animation", interactive=False, autoplay=True, loop=True,
                                         buttons=["download"], elem_id="video", height=420)
                        video_status = gr.Markdown(elem_id="video-status")
                        mp4 = gr.DownloadButton("Download MP4", size="sm", elem_id="download-mp4")
                    with gr.Tab("Video driving", id="driving-tab", elem_id="driving-tab"):
                        gr.Markdown(f"Upload a talking video (up to {MAX_SECONDS:g} s): the current identity, "
                                    "camera and size reenact it, with its sound. Tracking runs at about 2 frames/s "
                                    "on a 2-core CPU.")
                        drive_in = gr.Video(sources=["upload"], label="driving video", elem_id="drive-input",
                                            height=240)
                        beside = gr.Checkbox(value=True, label="show the driving video beside the portrait",
                                             elem_id="drive-beside")
                        reenact = gr.Button("Reenact", variant="primary", elem_id="reenact")
                        drive_out = gr.Video(label="reenactment", interactive=False, autoplay=True,
                                             buttons=["download"], elem_id="drive-video", height=420)
                        drive_status = gr.Markdown(elem_id="drive-status")
                        drive_mp4 = gr.DownloadButton("Download MP4", size="sm", elem_id="download-drive")
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    seed = gr.Number(value=thumb_seeds[0] if thumb_seeds else 0, precision=0,
                                     label=f"identity (seed, 0-{MAX_SEED})", elem_id="seed", min_width=140)
                    shuffle = gr.Button("Random identity", size="md", elem_id="random", min_width=100)
                person = gr.Dropdown([SEED_CHOICE, *renderer.identities], value=SEED_CHOICE, elem_id="person",
                                     label="person (an identity file of `aniportraitgan invert`)",
                                     visible=bool(renderer.identities))
                gallery = gr.Gallery(value=thumbs, label="example identities (click one)", columns=6, rows=1,
                                     allow_preview=False, height=150, object_fit="contain", elem_id="examples",
                                     buttons=[])
                psi = gr.Slider(0.0, 1.0, value=Controls.psi, step=0.05, label="ψ (truncation: 0 average, 1 none)",
                                elem_id="psi")
                with gr.Row():
                    view = gr.Radio(list(VIEWS), value="portrait", label="camera", elem_id="view", min_width=160)
                    size = gr.Dropdown(renderer.sizes, value=renderer.default_resolution, label="resolution (px)",
                                       elem_id="resolution", min_width=120)
                angles = {}
                with gr.Accordion("Camera, head and shoulders (degrees)", open=True):
                    with gr.Row():
                        for k, (lo, hi) in RANGES.items():
                            angles[k] = gr.Slider(lo, hi, value=0, step=1, label=ANGLE_LABELS[k],
                                                  elem_id=k.replace("_", "-"), min_width=160)
                with gr.Accordion("Expression", open=True):
                    with gr.Row():
                        exps = [gr.Slider(0.0, 1.0, value=0, step=0.05, label=k, min_width=160,
                                          elem_id="exp-" + k.replace(" ", "-")) for k in EXPRESSIONS]
                with gr.Accordion("All 52 ARKit coefficients", open=False):
                    with gr.Row():
                        arkit = [gr.Slider(0.0, 1.0, value=0, step=0.05, label=n, min_width=160, elem_id="arkit-" + n)
                                 for n in ARKIT_NAMES]
                reset = gr.Button("Neutral pose and expression", size="sm", elem_id="reset")

        inputs = [seed, psi, view, size, *angles.values(), *exps, *arkit, person]
        n_exp = len(exps)

        def controls(values) -> Controls:
            s, p, v, r, *rest = values
            rest, who = rest[:-1], rest[-1]
            a, e, k = rest[:len(angles)], rest[len(angles):len(angles) + n_exp], rest[len(angles) + n_exp:]
            return Controls(
                seed=s, identity="" if who in (None, SEED_CHOICE) else who, psi=p, view=v, resolution=r,
                **dict(zip(angles, a)),
                expressions=dict(zip(EXPRESSIONS, e)), arkit={n: x for n, x in zip(ARKIT_NAMES, k) if x},
            )

        def render(*values):
            if values[0] is None:  # the seed box is empty while someone types: wait for a number
                return gr.skip(), gr.skip(), gr.skip()
            try:
                r = renderer.render(controls(values))
            except Exception as exc:  # noqa: BLE001 - shown on the page
                raise fail(exc) from None
            return str(r.path), _status(r), str(r.path)

        def live(*values):
            if not renderer.is_live(values[2], values[3]):  # slow frames: wait for the release
                return gr.skip(), gr.skip(), gr.skip()
            return render(*values)

        def make(data, progress=gr.Progress()):
            progress((0, None), desc="starting")
            try:
                c = controls([data[x] for x in inputs])
                out = renderer.render_video(c, data[preset], data[between], data[fps],
                                            progress=lambda i, n: progress((i, n), desc="frames", unit="frames"))
            except Exception as exc:  # noqa: BLE001 - shown on the page
                raise fail(exc) from None
            note = f"{out.preset}: {out.frames} frames at {out.fps:g} fps, made in {out.seconds:.1f} s"
            return str(out.path), note, str(out.path)

        def reenacted(data, progress=gr.Progress()):
            def report(done: int, total: int, what: str) -> None:
                progress((done, total or None), desc=what, unit="frames")

            try:
                out = drive(renderer, controls([data[x] for x in inputs]), data[drive_in], data[beside], report)
            except Exception as exc:  # noqa: BLE001 - shown on the page
                raise fail(exc) from None
            note = f"{out.frames} frames at {out.fps:g} fps, made in {out.seconds:.1f} s"
            return str(out.path), note, str(out.path)

        outputs = [image, status, png]
        common = dict(inputs=inputs, outputs=outputs, trigger_mode="always_last", concurrency_id="render",
                      concurrency_limit=concurrency)
        sliders = [psi, *angles.values(), *exps, *arkit]
        gr.on([x.input for x in sliders], live, show_progress="minimal", api_name="render_live",
              api_visibility="undocumented", **common)
        gr.on([x.release for x in sliders] + [seed.change, person.change, view.change, size.change, app.load], render,
              show_progress="full", api_name="render", **common)
        shuffle.click(lambda: random.randint(0, MAX_SEED), outputs=seed, api_visibility="private", queue=False)

        def pick(evt):
            return thumb_seeds[evt.index]

        pick.__annotations__ = {"evt": gr.SelectData}  # a real class: this module's annotations are strings

        gallery.select(pick, outputs=seed, api_visibility="private", queue=False)
        reset.click(lambda: [0] * (len(angles) + n_exp + len(arkit)), outputs=[*angles.values(), *exps, *arkit],
                    api_visibility="private", queue=False).then(render, api_visibility="private", **common)
        make_video.click(make, inputs=set(inputs) | {preset, between, fps}, outputs=[video, video_status, mp4],
                         concurrency_id="video", concurrency_limit=1, api_name="video")
        reenact.click(reenacted, inputs=set(inputs) | {drive_in, beside}, outputs=[drive_out, drive_status, drive_mp4],
                      concurrency_id="video", concurrency_limit=1, api_name="drive")
    app.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> str:
    """Serves ``app`` (port 0: a free one) and returns its address; ``block`` waits for Ctrl-C."""
    gr = gradio()
    if port == 0:
        port = free_port(host)
    try:
        app.launch(
            server_name=host, server_port=port, prevent_thread_lock=not block, share=False, inbrowser=False,
            show_error=True, quiet=True, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
            max_threads=WORKER_THREADS, state_session_capacity=SESSIONS, max_file_size=MAX_UPLOAD,
            footer_links=["api", "settings"], theme=gr.themes.Default(), css=CSS,
        )
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port} ({exc})") from None
    return f"http://{host}:{port}/"


def serve(ckpt: str = "demo", host: str = "127.0.0.1", port: int = 7860, threads: int | None = None,
          device: str = "auto", concurrency: int = 1, cache_identities: int = 8, identities=()) -> int:
    """``aniportraitgan serve``: loads the model, builds the page and serves it until Ctrl-C (or
    SIGTERM), which it lets through after closing the server."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in [0, 65535], got {port}")
    for name, v in (("--threads", threads), ("--concurrency", concurrency), ("--cache-identities", cache_identities)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    gradio()  # a missing extra fails before the model loads
    if threads is not None:
        torch.set_num_threads(threads)
    model = load_inference_model(ckpt, device)
    people = {Path(f).stem: load_identity(f, model) for f in identities}  # the page's identity picker
    renderer = WebRenderer(model, cache_identities=cache_identities, identities=people)
    app = build_app(renderer, concurrency=concurrency)
    url = launch(app, host, port, block=False)
    print(f"serving {model.source.name} at {url} (Ctrl-C stops)", flush=True)
    try:
        while app.is_running:  # Ctrl-C or SIGTERM (the CLI's signals.Interrupted) ends the wait
            time.sleep(0.2)
    finally:  # then the CLI exits with 130 or 143, as every command does
        app.close()
        renderer.close()
    return 0


__all__ = ["EXAMPLE_SEEDS", "LIVE_MS", "build_app", "free_port", "gradio", "launch", "serve"]
