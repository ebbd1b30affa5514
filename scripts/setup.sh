#!/usr/bin/env bash
# Set up everything this project needs on a fresh machine with Python 3.11: a virtual environment
# in .venv with torch/torchvision, the project (editable) and its tools, and — for the demo's browser
# test — Debian's chromium when apt-get is available. Safe to rerun: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency list changed (stamp = hash of pyproject.toml).
stamp=.venv/.snmn-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing torch 2.14.1 / torchvision 0.29.1 and the project (a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
fi

# The demo's browser test drives Debian's chromium through chromedriver (root on Debian/Ubuntu).
if [ "${SNMN_SKIP_BROWSER:-0}" != 1 ] && ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "setup: installing chromium and chromium-driver (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup: chromium/chromedriver missing: install them for the demo's browser test" >&2
    fi
fi

# DVC needs a git repository; a fresh clone is one, a downloaded tarball is not.
if [ ! -d .git ]; then
    git init -q && git add -A && git -c user.name=snmn -c user.email=snmn@localhost commit -qm "snapshot"
fi
