#!/usr/bin/env bash
# quant's interop suite, one command: makes a venv with the real libraries from the package
# registry (pinned below), builds the quant CLI, fetches MiniLM, then runs interop.py, which
# quantizes small models with every backend, loads each output with the library its users
# run, runs a forward pass against the original and prints one table.
#
#   interop/run.sh [VENV_DIR]            # default venv: ~/.cache/quant-interop/venv
#
# Environment:
#   QUANT_INTEROP_VENV=DIR     use this venv (same as the argument)
#   QUANT_INTEROP_NO_INSTALL=1 use the venv as it is (for one already holding the pins);
#                              a missing ninja (optimum-quanto's CPU kernels) goes to WORK/pydeps
#   QUANT_INTEROP_WORK=DIR     scratch folder (default /tmp/quant-interop)
#   QUANT_BIN=FILE             a built quant CLI (default: cargo build --release -p quant-cli)
#   LLAMACPP_DIR=DIR           existing llama.cpp tools (bin/llama-embedding, src/), used as they
#                              are; unset: built into WORK/llamacpp with ../shared/tools/llamacpp.sh
#   QUANT_INTEROP_MINILM=0     skip MiniLM (no download)
#   QUANT_INTEROP_ONLY=REGEX   run only the matching suites
# Not part of `cargo test`: it needs about 5 GB of Python packages and a few minutes of CPU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${1:-${QUANT_INTEROP_VENV:-$HOME/.cache/quant-interop/venv}}
work=${QUANT_INTEROP_WORK:-/tmp/quant-interop}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# The versions the table in README.md was made with.
pins=(
  "torch==2.15.0" "transformers==5.25.0" "diffusers==0.42.1" "torchao==0.18.0"
  "bitsandbytes==0.50.2" "optimum-quanto==0.2.7" "accelerate==1.16.0" "gguf==0.19.0"
  "numpy==2.4.6" "safetensors==0.8.0" "sentencepiece" "protobuf" "ninja"
)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
py="$venv/bin/python"
if [ "${QUANT_INTEROP_NO_INSTALL:-0}" != 1 ]; then
  "$venv/bin/pip" install -q "${pins[@]}"
elif ! "$py" -c 'import ninja' 2>/dev/null && ! command -v ninja >/dev/null; then
  "$venv/bin/pip" install -q --target "$work/pydeps" ninja
fi
if [ -d "$work/pydeps" ]; then
  export PYTHONPATH="$work/pydeps${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$work/pydeps/bin:$PATH"
fi
export PATH="$venv/bin:$PATH"

quant=${QUANT_BIN:-}
if [ -z "$quant" ]; then
  (cd "$repo" && cargo build --release -p quant-cli >&2)
  quant="${CARGO_TARGET_DIR:-$repo/target}/release/quant"
fi

args=(--quant "$quant" --work "$work")
if [ "${QUANT_INTEROP_MINILM:-1}" != 0 ]; then
  if minilm=$(PATH="$venv/bin:$PATH" sh "$repo/scripts/fetch-minilm.sh" "$work/minilm"); then
    args+=(--minilm "$minilm")
  else
    echo "MiniLM could not be fetched: its rows are left out" >&2
  fi
fi

llama=${LLAMACPP_DIR:-$work/llamacpp}
if [ -z "${LLAMACPP_DIR:-}" ] && [ ! -x "$llama/bin/llama-embedding" ] && [ -x "$repo/../shared/tools/llamacpp.sh" ]; then
  "$repo/../shared/tools/llamacpp.sh" "$llama" >&2 || true
fi
if [ -x "$llama/bin/llama-embedding" ] && [ -f "$llama/src/convert_hf_to_gguf.py" ]; then
  args+=(--llamacpp "$llama")
else
  echo "no llama.cpp tools in $llama: its rows are left out" >&2
fi
[ -n "${QUANT_INTEROP_ONLY:-}" ] && args+=(--only "$QUANT_INTEROP_ONLY")

exec "$py" "$here/interop.py" "${args[@]}"
