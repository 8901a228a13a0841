#!/usr/bin/env bash
# CUDA check of the embed stage: builds, checks that the CUDA execution provider gives the
# same embeddings as the CPU (cosine >= 0.9999 for every row) and times both, in one call on
# a machine with an NVIDIA GPU. The check itself is the ignored test
# `tests/embed_gpu.rs` (cuda_matches_cpu_and_reports_its_throughput).
#
# Usage:
#   scripts/gpu-check.sh            prepare + run, on one machine with cargo, PyPI access and a GPU
#   scripts/gpu-check.sh prepare    on a build machine: build the test binary, fetch
#                                   onnxruntime-gpu 1.31.1 (scripts/install-onnxruntime.sh --gpu
#                                   --prefix .ort-gpu), and cut the CUDA provider library into
#                                   parts of < 60 MiB under .gpu-check/ for machines that only
#                                   accept small transfers
#   scripts/gpu-check.sh run        on the GPU machine (no cargo or network needed): reassemble
#                                   the parts if needed, find the CUDA 13 / cuDNN 9 libraries,
#                                   run the check
#
# What `run` needs in the repository folder: .gpu-check/embed_gpu (the test binary),
# .ort-gpu/lib (or .gpu-check/ort-gpu-part-* to reassemble), models/all-MiniLM-L6-v2/, and
# data/sample/verses.parquet.
#
# CUDA libraries: ONNX Runtime's CUDA provider needs libcudart.so.13, libcublas(Lt).so.13,
# libcurand.so.10, libcufft.so.12 and cuDNN 9. They are taken from the system
# (ldconfig) or, failing that, from the nvidia-* wheels of an installed PyTorch
# (site-packages/nvidia/*/lib), added to LD_LIBRARY_PATH.
#
# Environment: TRIPLINE_GPU_ROWS (default 4096) rows to embed; PYTHON (default python3) to
# find PyTorch's CUDA libraries.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
WORK="$REPO/.gpu-check"
ORT_GPU="$REPO/.ort-gpu"
PART_MIB=55

log() { echo "gpu-check: $*"; }
die() { echo "gpu-check: error: $*" >&2; exit 1; }

prepare() {
  mkdir -p "$WORK"
  log "building the check (cargo test --release --test embed_gpu --no-run)"
  local bin
  bin="$(cargo test --release --test embed_gpu --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "embed_gpu" and m.get("executable"):
        print(m["executable"])' | tail -1)"
  [ -n "$bin" ] && [ -x "$bin" ] || die "could not build tests/embed_gpu.rs"
  cp "$bin" "$WORK/embed_gpu"
  log "test binary: .gpu-check/embed_gpu"
  if [ ! -f "$ORT_GPU/lib/libonnxruntime_providers_cuda.so" ]; then
    "$REPO/scripts/install-onnxruntime.sh" --gpu --prefix "$ORT_GPU"
  fi
  log "cutting the CUDA provider library into ${PART_MIB} MiB parts"
  rm -f "$WORK"/ort-gpu-part-*
  (cd "$ORT_GPU" && tar -cf - lib | gzip -1) | split -b "${PART_MIB}m" -d -a 2 - "$WORK/ort-gpu-part-"
  (cd "$WORK" && sha256sum ort-gpu-part-* > ort-gpu-parts.sha256)
  ls -l "$WORK"
}

cuda_lib_dirs() {
  # System libraries first; then PyTorch's nvidia wheels.
  if ldconfig -p 2>/dev/null | grep -q 'libcudart.so.13'; then
    return 0
  fi
  "${PYTHON:-python3}" - <<'EOF' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
dirs = []
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "*", "lib")):
        if glob.glob(os.path.join(d, "lib*.so*")) and d not in dirs and "nvidia" in d:
            dirs.append(d)
print(":".join(dirs))
EOF
}

run() {
  if [ ! -f "$ORT_GPU/lib/libonnxruntime_providers_cuda.so" ]; then
    ls "$WORK"/ort-gpu-part-* >/dev/null 2>&1 || die "no .ort-gpu/lib and no parts in .gpu-check/: run '$0 prepare' first"
    if [ -f "$WORK/ort-gpu-parts.sha256" ]; then
      (cd "$WORK" && sha256sum -c --quiet ort-gpu-parts.sha256) || die "a part is damaged"
    fi
    mkdir -p "$ORT_GPU"
    cat "$WORK"/ort-gpu-part-* | gzip -dc | tar -xf - -C "$ORT_GPU"
    log "reassembled .ort-gpu/lib"
  fi
  [ -x "$WORK/embed_gpu" ] || die "no .gpu-check/embed_gpu: run '$0 prepare' first"
  local lib
  lib="$(ls "$ORT_GPU"/lib/libonnxruntime.so.1.* | head -1)"
  export ORT_DYLIB_PATH="$lib"
  local extra
  extra="$(cuda_lib_dirs)"
  export LD_LIBRARY_PATH="$ORT_GPU/lib${extra:+:$extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
  log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu-check: gpu: /'
  # The test binary looks for models/ and data/ under the directory it was built in; point it here.
  export TRIPLINE_MODELS_DIR="${TRIPLINE_MODELS_DIR:-$REPO/models}"
  export TRIPLINE_GPU_SAMPLE="${TRIPLINE_GPU_SAMPLE:-$REPO/data/sample/verses.parquet}"
  "$WORK/embed_gpu" --ignored --nocapture --test-threads 1 2>&1 | tee "$WORK/gpu-check.log"
  log "output saved in .gpu-check/gpu-check.log (copy it into docs/EMBED.md)"
}

case "${1:-all}" in
  prepare) prepare ;;
  run) run ;;
  all) prepare; run ;;
  -h|--help) sed -n '2,30p' "$0" ;;
  *) die "unknown command: $1 (prepare, run, or nothing for both)" ;;
esac
