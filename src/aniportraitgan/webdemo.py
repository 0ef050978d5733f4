"""A web demo: one page with sliders for camera, head, shoulders and expression, served by the
standard library's HTTP server, rendering each request with the generator.

Endpoints:
- ``GET /``: the page (plain HTML and JavaScript, no build step, no external files);
- ``GET /info``: JSON with the model's source, stage, step and native resolutions;
- ``GET /render?seed=&view=&res=&psi=&yaw=&pitch=&head=&shrug=&exp=``: a PNG. Angles are in
  degrees: ``yaw``/``pitch`` move the camera, ``head=yaw,pitch,roll`` turns the head (shared
  with the neck as the keyframe presets do), ``shrug`` raises both collars; ``exp`` lists ARKit
  coefficients as ``name:value,...`` with values in [0, 1]. The response carries the render time
  in ``X-Render-Ms``. Bad parameters get a 400 with the reason as text.

The per-identity work (mapping networks and, in stage 2, the super-resolved maps) is cached for
the last few (seed, view, resolution) combinations, so dragging a slider only pays for the
deformation and the rendering.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch

from aniportraitgan.animation.contact_sheet import NECK_SHARE
from aniportraitgan.animation.keyframes import (
    ARKIT_NAMES,
    EXP_DIM,
    NUM_JOINTS,
    Keyframes,
    expression_index,
    joint_index,
)
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import euler_zyx_to_matrix, matrix_to_axis_angle

MAX_RESOLUTION = 512
MAX_SEED = 2**31 - 1
CACHED_IDENTITIES = 8
# Expression sliders of the page: label -> coefficients it drives.
SLIDERS: dict[str, tuple[str, ...]] = {
    "jaw open": ("jawOpen",),
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "eyes closed": ("eyeBlinkLeft", "eyeBlinkRight"),
    "brows up": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"),
    "frown": ("mouthFrownLeft", "mouthFrownRight"),
    "pucker": ("mouthPucker",),
}


def _number(params: dict, name: str, default: float, lo: float, hi: float) -> float:
    raw = params.get(name, [None])[0]
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"{name} must be in [{lo:g}, {hi:g}], got {raw}")
    return value


def _integer(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = _number(params, name, default, lo, hi)
    if value != int(value):
        raise InputError(f"{name} must be an integer, got {value:g}")
    return int(value)


def parse_expression(text: str) -> torch.Tensor:
    """'jawOpen:0.5,mouthSmileLeft:1' -> [52] coefficients (unnamed ones 0)."""
    exp = torch.zeros(EXP_DIM)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition(":")
        if not sep:
            raise InputError(f"exp entries are name:value, got {part!r}")
        try:
            v = float(value)
        except ValueError:
            raise InputError(f"exp value of {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise InputError(f"exp value of {name!r} must be in [0, 1], got {value}")
        exp[expression_index(name.strip())] = v
    return exp


def request_keyframe(params: dict) -> Keyframes:
    """One keyframe from the query parameters of /render (see the module docstring)."""
    yaw = math.radians(_number(params, "yaw", 0.0, -90.0, 90.0))
    pitch = math.radians(_number(params, "pitch", 0.0, -60.0, 60.0))
    head_text = params.get("head", ["0,0,0"])[0] or "0,0,0"
    try:
        head = [math.radians(float(v)) for v in head_text.split(",")]
    except ValueError:
        raise InputError(f"head must be yaw,pitch,roll in degrees, got {head_text!r}") from None
    if len(head) != 3 or not all(math.isfinite(v) and abs(v) <= math.radians(90.0) for v in head):
        raise InputError(f"head must be three angles within +-90 degrees, got {head_text!r}")
    shrug = math.radians(_number(params, "shrug", 0.0, -30.0, 30.0))
    pose = torch.zeros(NUM_JOINTS, 3)
    # Head yaw about the scene's up axis (Y), pitch about X, roll about Z; the neck takes a share.
    R = euler_zyx_to_matrix(torch.tensor([head[2], head[0], head[1]]))
    rotvec = matrix_to_axis_angle(R)
    pose[joint_index("neck")] = NECK_SHARE * rotvec
    pose[joint_index("head")] = (1.0 - NECK_SHARE) * rotvec
    # The left collar points to +X, so it rises with +Z rotation; the right one with -Z.
    pose[joint_index("left_collar"), 2] = shrug
    pose[joint_index("right_collar"), 2] = -shrug
    exp = parse_expression(params.get("exp", [""])[0] or "")
    return Keyframes(exp[None], pose[None], torch.tensor([[yaw, pitch]]))


class WebRenderer:
    """Renders single frames of an ``InferenceModel``, keeping a few identities' caches."""

    def __init__(self, model, psi: float = 0.7) -> None:
        self.model = model
        self.psi = float(psi)
        self._sources: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # one render at a time: the generator is not re-entrant

    def _source(self, seed: int, view: str, resolution: int, psi: float):
        from aniportraitgan.animation.animate import GeneratorFrames

        key = (seed, view, resolution, psi)
        if key in self._sources:
            self._sources.move_to_end(key)
        else:
            self._sources[key] = GeneratorFrames(self.model, seed, psi=psi, resolution=resolution, view=view)
            while len(self._sources) > CACHED_IDENTITIES:
                self._sources.popitem(last=False)
        return self._sources[key]

    def render(self, params: dict) -> tuple[np.ndarray, float]:
        """uint8 [H, W, 3] image for the query parameters, and the render time in ms."""
        seed = _integer(params, "seed", 0, 0, MAX_SEED)
        view = params.get("view", ["portrait"])[0]
        if view not in ("portrait", "face"):
            raise InputError(f"view must be 'portrait' or 'face', got {view!r}")
        native = self.model.face_resolution if view == "face" else self.model.portrait_resolution
        resolution = _integer(params, "res", native, 8, MAX_RESOLUTION)
        psi = _number(params, "psi", self.psi, 0.0, 1.0)
        kf = request_keyframe(params)
        with self._lock:
            t0 = time.perf_counter()
            image = self._source(seed, view, resolution, psi)(kf)[0]
            ms = (time.perf_counter() - t0) * 1000.0
        return image, ms

    def info(self) -> dict:
        m = self.model
        return {
            "source": m.source.name, "stage": m.stage, "step": m.step, "psi": self.psi,
            "portrait_resolution": m.portrait_resolution, "face_resolution": m.face_resolution,
            "device": str(m.device), "sliders": {k: list(v) for k, v in SLIDERS.items()},
            "expressions": list(ARKIT_NAMES),
        }


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_server(renderer: WebRenderer, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for ``renderer`` (port 0 picks a free port: ``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            params = parse_qs(url.query)
            try:
                if url.path == "/":
                    self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/info":
                    self._send(200, json.dumps(renderer.info()).encode(), "application/json")
                elif url.path == "/render":
                    image, ms = renderer.render(params)
                    self._send(200, png_bytes(image), "image/png", {"X-Render-Ms": f"{ms:.1f}"})
                else:
                    self._send(404, f"no such page: {url.path}".encode(), "text/plain; charset=utf-8")
            except InputError as exc:
                self._send(400, str(exc).encode(), "text/plain; charset=utf-8")

        def log_message(self, format, *args) -> None:  # quiet: one line per request is noise here
            pass

    return ThreadingHTTPServer((host, port), Handler)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>AniPortraitGAN demo</title>
<style>
body { font-family: sans-serif; margin: 1.5em; display: flex; gap: 2em; flex-wrap: wrap; }
#controls { width: 22em; } label { display: block; margin-top: .6em; font-size: .9em; }
input[type=range] { width: 100%; } img { width: 384px; height: 384px; image-rendering: pixelated;
border: 1px solid #ccc; background: #fff; } #status { color: #555; font-size: .85em; min-height: 1.2em; }
h3 { margin: 1em 0 .2em; font-size: 1em; }
</style></head><body>
<div><img id="view" alt="generated portrait"><div id="status"></div><div id="model"></div></div>
<div id="controls">
<label>identity (seed) <input id="seed" type="number" min="0" value="0" style="width:6em"></label>
<label>view <select id="viewsel"><option value="portrait">portrait (main camera)</option>
<option value="face">face camera</option></select>
 resolution <select id="res"><option value="">native</option><option>64</option><option>128</option>
<option>256</option></select></label>
<h3>camera</h3>
<label>yaw <span></span><input id="yaw" type="range" min="-45" max="45" value="0"></label>
<label>pitch <span></span><input id="pitch" type="range" min="-30" max="30" value="0"></label>
<h3>head and shoulders</h3>
<label>head turn <span></span><input id="hyaw" type="range" min="-45" max="45" value="0"></label>
<label>head nod <span></span><input id="hpitch" type="range" min="-30" max="30" value="0"></label>
<label>head tilt <span></span><input id="hroll" type="range" min="-30" max="30" value="0"></label>
<label>shoulder shrug <span></span><input id="shrug" type="range" min="-7" max="17" value="0"></label>
<h3>expression</h3><div id="exps"></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
let sliders = {}, pending = false, again = false;
function query() {
  const exp = [];
  for (const [label, names] of Object.entries(sliders)) {
    const v = $("exp-" + label).value / 100;
    if (v > 0) for (const n of names) exp.push(n + ":" + v);
  }
  const q = new URLSearchParams({seed: $("seed").value, view: $("viewsel").value,
    yaw: $("yaw").value, pitch: $("pitch").value, shrug: $("shrug").value,
    head: [$("hyaw").value, $("hpitch").value, $("hroll").value].join(","), exp: exp.join(",")});
  if ($("res").value) q.set("res", $("res").value);
  return q;
}
async function update() {
  if (pending) { again = true; return; }
  pending = true;
  for (const el of document.querySelectorAll("label > span"))
    el.textContent = el.nextElementSibling.value + (el.parentElement.closest("#exps") ? "%" : "\\u00b0");
  try {
    const r = await fetch("/render?" + query());
    if (!r.ok) { $("status").textContent = "error: " + await r.text(); }
    else {
      $("view").src = URL.createObjectURL(await r.blob());
      $("status").textContent = "rendered in " + r.headers.get("X-Render-Ms") + " ms";
    }
  } catch (e) { $("status").textContent = "error: " + e; }
  pending = false;
  if (again) { again = false; update(); }
}
fetch("/info").then(r => r.json()).then(info => {
  sliders = info.sliders;
  $("model").textContent = info.source + ", stage " + info.stage + (info.step ? ", step " + info.step : "") +
    ", " + info.device;
  for (const label of Object.keys(sliders)) {
    const l = document.createElement("label");
    l.innerHTML = label + " <span></span><input id='exp-" + label + "' type='range' min='0' max='100' value='0'>";
    $("exps").appendChild(l);
  }
  for (const el of document.querySelectorAll("input, select")) el.addEventListener("input", update);
  update();
});
</script></body></html>
"""

__all__ = ["SLIDERS", "WebRenderer", "make_server", "parse_expression", "png_bytes", "request_keyframe"]
