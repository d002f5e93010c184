#!/usr/bin/env bash
# essence corruptions: the frost textures (data files only) and the reference implementation used by the tests
# and benchmarks/corruptions.py. --no-deps: its declared opencv-python would clash with opencv-python-headless.
set -euo pipefail
PIP=${PIP:-pip}
$PIP install -q --no-deps imagecorruptions==1.1.2
