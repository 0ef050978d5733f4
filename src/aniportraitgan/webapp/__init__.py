"""The web app of ``aniportraitgan serve``: a Gradio page over a render function.

``render``: ``Controls`` -> image / preset video with bounded caches (no Gradio needed).
``app``: the Gradio Blocks layout, the queue and the server (needs the ``[web]`` extra).
"""

from aniportraitgan.webapp.app import build_app, launch, serve
from aniportraitgan.webapp.render import EXPRESSIONS, RANGES, VIEWS, Controls, Render, Video, WebRenderer

__all__ = [
    "EXPRESSIONS", "RANGES", "VIEWS", "Controls", "Render", "Video", "WebRenderer", "build_app", "launch", "serve",
]
