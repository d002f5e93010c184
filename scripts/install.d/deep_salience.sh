#!/usr/bin/env bash
# essence deep-salience: the pip-only MIDI synthesiser used to render the Bach chorales, and basic-pitch (its ONNX
# model, a reproduce/benchmark baseline). Both --no-deps (ANCHORS.md §0): tinysoundfont declares pyaudio (playback
# only, needs portaudio headers); basic-pitch declares tensorflow on Linux/py>=3.11, but its ONNX path needs only
# onnxruntime, librosa, mir_eval, pretty_midi, resampy (0.4.3: older releases import the removed pkg_resources), scikit-learn and scipy.
# Debian's fluid-soundfont-gm (FluidR3_GM.sf2, 120 MB download): the second soundfont that the standard
# reproduction renders its validation and test clips with (out-of-domain timbres; training uses TimGM6mb).
# Idempotent: apt runs only when the package is missing.
set -euo pipefail
PIP=${PIP:-pip}
$PIP install -q --no-deps tinysoundfont==0.3.7 basic-pitch==0.4.0 resampy==0.4.3

if ! dpkg -s fluid-soundfont-gm >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends fluid-soundfont-gm
fi
