"""The Gradio app without a browser: its API answers with files named after what they show,
bad values come back as readable errors, nothing connects anywhere but loopback, and the
command line refuses bad arguments before loading anything."""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest

from aniportraitgan.inference import load_inference_model

pytest.importorskip("gradio", reason="the web app needs the [web] extra (gradio)")

from aniportraitgan.webapp import EXPRESSIONS, RANGES, WebRenderer, build_app, launch  # noqa: E402
from aniportraitgan.webapp.app import EXAMPLE_SEEDS  # noqa: E402

N_ARKIT = 52


def _args(seed=0, psi=0.7, view="portrait", resolution=32, **angles):
    """The /render endpoint's inputs in page order: seed, psi, view, size, angles, expressions, ARKit."""
    return [seed, psi, view, resolution, *(angles.get(k, 0) for k in RANGES), *([0] * len(EXPRESSIONS)),
            *([0] * N_ARKIT)]


class Outbound:
    """Records every address this process connects to or looks up while installed."""

    LOOPBACK = ("127.", "::1", "localhost")

    def __init__(self, monkeypatch):
        self.seen: list[str] = []
        real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

        def connect(sock, address):
            self.seen.append(str(address[0]) if isinstance(address, tuple) else str(address))
            return real_connect(sock, address)

        def lookup(host, *args, **kwargs):
            self.seen.append(str(host))
            return real_lookup(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "getaddrinfo", lookup)

    def outside(self) -> list[str]:
        return [a for a in self.seen if not a.startswith(self.LOOPBACK) and a != "None"]


@pytest.fixture(scope="module")
def served():
    renderer = WebRenderer(load_inference_model("demo", "cpu"))
    app = build_app(renderer, examples=EXAMPLE_SEEDS[:2])
    url = launch(app, "127.0.0.1", 0, block=False)
    yield url, renderer
    app.close()
    renderer.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def test_api_renders_named_pngs_and_reports_errors(served):
    from gradio_client.exceptions import AppError

    url, _ = served
    client = _client(url)
    image, status, download = client.predict(*_args(seed=3, yaw=20, head_turn=-10), api_name="/render")
    name = image["path"].rsplit("/", 1)[-1]
    assert name.startswith("aniportraitgan_seed3_portrait_32px_") and name.endswith(".png")
    assert download["path"].rsplit("/", 1)[-1] == name
    assert status.startswith("32×32 portrait · seed 3 · ψ 0.70")
    _, again, _ = client.predict(*_args(seed=3, yaw=20, head_turn=-10), api_name="/render")
    assert again.endswith(" ms (cached)")
    image, status, _ = client.predict(*_args(seed=3, view="both"), api_name="/render")
    assert status.startswith("64×32 both")
    with urllib.request.urlopen(url.rstrip("/") + "/gradio_api/file=" + image["path"], timeout=30) as r:
        assert r.status == 200 and r.read(8) == b"\x89PNG\r\n\x1a\n"
    for args, message in ((_args(seed=-1), "seed must be in [0, 2147483647], got -1"),
                          (_args(resolution=48), "48 is not in the list of choices: [16, 32, 64, 128, 256"),
                          (_args(psi=2.0), "Value 2.0 is greater than maximum value 1.0")):
        with pytest.raises(AppError) as err:
            client.predict(*args, api_name="/render")
        assert message in str(err.value)
    client.close()


def test_nothing_connects_outside(monkeypatch):
    calls = Outbound(monkeypatch)
    renderer = WebRenderer(load_inference_model("demo", "cpu"))
    app = build_app(renderer, examples=EXAMPLE_SEEDS[:1])
    url = launch(app, "127.0.0.1", 0, block=False)
    try:
        for path in ("", "config", "gradio_api/info", "theme.css"):
            with urllib.request.urlopen(url + path, timeout=30) as r:
                assert r.status == 200
                body = r.read()
        assert b"fonts.googleapis" not in body
        client = _client(url)
        client.predict(*_args(seed=1), api_name="/render")
        client.close()
    finally:
        app.close()
        renderer.close()
    assert calls.seen and not calls.outside(), calls.outside()


def test_cli_refuses_bad_arguments(capsys, monkeypatch):
    from aniportraitgan.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in [0, 65535]" in capsys.readouterr().err
    assert main(["serve", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the [web] extra were not installed
    assert main(["serve", "--ckpt", "demo"]) == 2
    assert "pip install 'aniportraitgan[web]'" in capsys.readouterr().err
