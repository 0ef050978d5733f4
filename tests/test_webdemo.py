"""The web demo: query parsing, rendering through HTTP, clear 400s for bad parameters."""

from __future__ import annotations

import io
import json
import math
import threading
import urllib.error
import urllib.request

import pytest
import torch

from aniportraitgan.animation.keyframes import expression_index, joint_index
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig
from aniportraitgan.inference import load_inference_model
from aniportraitgan.rotations import axis_angle_to_matrix
from aniportraitgan.training.checkpoint import export_generator
from aniportraitgan.webdemo import WebRenderer, make_server, parse_expression, request_keyframe


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    body = PortraitBodyModel.load()
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.tiny(), body)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    export_generator(path, g.state_dict(), g.config.to_dict(), stage=1)
    srv = make_server(WebRenderer(load_inference_model(path, "cpu", body_model=body)), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_parse_expression_and_keyframe():
    exp = parse_expression("jawOpen:0.5, mouthSmileLeft:1")
    assert exp[expression_index("jawOpen")] == 0.5 and exp[expression_index("mouthSmileLeft")] == 1.0
    assert exp.sum() == 1.5
    kf = request_keyframe({"yaw": ["30"], "head": ["20,0,0"], "shrug": ["10"]})
    assert kf.camera[0, 0].item() == pytest.approx(math.radians(30))
    # Head turn about the up axis, shared between neck and head.
    total = kf.pose[0, joint_index("neck")] + kf.pose[0, joint_index("head")]
    assert torch.allclose(total, torch.tensor([0.0, math.radians(20), 0.0]), atol=1e-6)
    assert kf.pose[0, joint_index("left_collar"), 2].item() == pytest.approx(math.radians(10))
    assert kf.pose[0, joint_index("right_collar"), 2].item() == pytest.approx(-math.radians(10))
    # A nod (pitch) is a rotation about X.
    nod = request_keyframe({"head": ["0,15,0"]}).pose[0]
    R = axis_angle_to_matrix(nod[joint_index("neck")] + nod[joint_index("head")])
    assert torch.allclose(R, axis_angle_to_matrix(torch.tensor([math.radians(15), 0.0, 0.0])), atol=1e-6)
    for bad, message in (("jawOpen", "name:value"), ("jawOpen:2", r"\[0, 1\]"), ("nope:1", "unknown ARKit")):
        with pytest.raises(InputError, match=message):
            parse_expression(bad)
    with pytest.raises(InputError, match="head"):
        request_keyframe({"head": ["10,20"]})


def test_http_render_info_and_errors(server):
    from PIL import Image

    code, headers, body = _get(server + "/")
    assert code == 200 and b"<html>" in body and headers["Content-Type"].startswith("text/html")
    code, _, body = _get(server + "/info")
    info = json.loads(body)
    assert code == 200 and info["stage"] == 1 and "jaw open" in info["sliders"]
    code, headers, body = _get(server + "/render?seed=3&view=face&res=16&exp=jawOpen:1&head=10,5,0")
    assert code == 200 and headers["Content-Type"] == "image/png" and float(headers["X-Render-Ms"]) > 0
    assert Image.open(io.BytesIO(body)).size == (16, 16)
    code, _, portrait = _get(server + "/render?seed=3&res=16")
    assert code == 200 and Image.open(io.BytesIO(portrait)).size == (16, 16)
    for query, message in (("seed=-1", "seed"), ("view=side", "view"), ("res=4096", "res"),
                           ("yaw=nan", "yaw"), ("exp=smile:1", "unknown ARKit")):
        code, _, body = _get(server + "/render?" + query)
        assert code == 400 and message in body.decode(), (query, body)
    assert _get(server + "/nope")[0] == 404


def test_cli_serve_rejects_bad_port(capsys):
    from aniportraitgan.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
