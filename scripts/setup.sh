#!/usr/bin/env bash
# One-time set-up, safe to re-run: a virtual environment in .venv with aedmae and everything its
# tests need. CPU machines get the CPU build of torch (installed first, so nothing pulls CUDA).
# Set AEDMAE_TORCH to another requirement (e.g. "torch>=2.4" for a CUDA build) to change that.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${AEDMAE_VENV:-.venv}
TORCH=${AEDMAE_TORCH:-torch==2.13.0}

# System packages the tests use, from Debian: a real Prometheus (and promtool), and GStreamer's RTSP
# server (run by the system python through python3-gi) for the camera tests; headless Chromium for the
# live-preview test. Installed when we are
# root with apt (CI, containers); otherwise the tests that need them say what is missing.
APT_PACKAGES="prometheus python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  chromium"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:" $missing
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
stamp="$VENV/.aedmae-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing $TORCH and aedmae[train,export,serve,dev] (about a minute on first run)"
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "$TORCH"
  "${PIP[@]}" install -e ".[train,export,serve,dev]"
  touch "$stamp"
fi
