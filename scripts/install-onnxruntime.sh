#!/usr/bin/env bash
# Install the ONNX Runtime 1.31.1 shared library that tripline loads at run
# time (the `ort` crate's load-dynamic feature reads ORT_DYLIB_PATH), taken
# from the official PyPI wheel. No Python environment is needed beyond a
# python3 with pip to download and unzip the wheel.
#
# Usage: scripts/install-onnxruntime.sh [--gpu] [--prefix DIR]
#   --gpu         onnxruntime-gpu (CUDA and TensorRT providers; Linux x86_64 only)
#   --prefix DIR  install into DIR/lib (default: <repo>/.ort)
#
# Environment:
#   TRIPLINE_WHEEL_CACHE  where downloaded wheels are kept (default: <repo>/.cache/wheels)
#   PYTHON                python3 with pip (default: <repo>/.venv/bin/python if present, else python3)
#
# The wheel is fetched with `pip download --no-deps --only-binary=:all:
# --platform manylinux_2_28_<arch> --python-version 3.11 --implementation cp
# --abi cp311`, so any Python with pip can fetch it, and checked against the
# sha256 pinned below (pip checks it too, via --require-hashes). Only the
# shared libraries are unpacked, each checked against its own pinned sha256.
# The GPU libraries need the NVIDIA driver, CUDA 13 (cudart, cuBLAS, cuRAND)
# and cuDNN 9 at run time (TensorRT 10 for the TensorRT provider); they are
# not part of the wheel.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIPLINE_WHEEL_CACHE:-$REPO/.cache/wheels}"
PREFIX="$REPO/.ort"
GPU=0
ORT_VERSION="1.31.1"

while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=1; shift ;;
    --prefix) [ $# -ge 2 ] || { echo "install-onnxruntime: --prefix needs a directory" >&2; exit 2; }
              PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "install-onnxruntime: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "install-onnxruntime: $*"; }
die() { echo "install-onnxruntime: error: $*" >&2; exit 1; }

# --- pins ---------------------------------------------------------------------
# Wheel sha256 values are those PyPI publishes for the files.
# Unpacked files: member name in onnxruntime/capi/ | sha256
case "$(uname -s)-$(uname -m)-$GPU" in
  Linux-x86_64-0)
    PACKAGE="onnxruntime"
    WHEEL="onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
    PLATFORM="manylinux_2_28_x86_64"
    LIBS=(
      "libonnxruntime.so.1.31.1|fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"
      "libonnxruntime_providers_shared.so|086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
    ) ;;
  Linux-aarch64-0|Linux-arm64-0)
    PACKAGE="onnxruntime"
    WHEEL="onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_aarch64.whl"
    WHEEL_SHA256="da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3"
    PLATFORM="manylinux_2_28_aarch64"
    LIBS=(
      "libonnxruntime.so.1.31.1|8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467"
      "libonnxruntime_providers_shared.so|3b6be288fbfb7dff8770d08a23defdde18e8f7e0f5a2b344a0e5e238c999ea88"
    ) ;;
  Linux-x86_64-1)
    PACKAGE="onnxruntime-gpu"
    WHEEL="onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    WHEEL_SHA256="e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6"
    PLATFORM="manylinux_2_28_x86_64"
    LIBS=(
      "libonnxruntime.so.1.31.1|5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"
      "libonnxruntime_providers_shared.so|086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
      "libonnxruntime_providers_cuda.so|d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"
      "libonnxruntime_providers_tensorrt.so|1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e"
    ) ;;
  *)
    die "no pinned ONNX Runtime $ORT_VERSION wheel for $(uname -s) $(uname -m)$([ "$GPU" = 1 ] && echo ' with --gpu') (supported: Linux x86_64, Linux aarch64 CPU-only)" ;;
esac

LIBDIR="$PREFIX/lib"
VARIANT="$PACKAGE $ORT_VERSION $PLATFORM"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

pick_python() {
  local py
  for py in "${PYTHON:-}" "$REPO/.venv/bin/python" python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then echo "$py"; return 0; fi
  done
  die "need a python3 with pip to download the wheel (Debian/Ubuntu: apt-get install python3-pip)"
}

libs_in_place() {
  local entry name sha
  [ -f "$LIBDIR/.variant" ] && [ "$(cat "$LIBDIR/.variant")" = "$VARIANT" ] || return 1
  for entry in "${LIBS[@]}"; do
    IFS='|' read -r name sha <<<"$entry"
    [ -f "$LIBDIR/$name" ] && [ "$(sha256_of "$LIBDIR/$name")" = "$sha" ] || return 1
  done
  [ -L "$LIBDIR/libonnxruntime.so" ] && [ -L "$LIBDIR/libonnxruntime.so.1" ]
}

if libs_in_place; then
  log "$PACKAGE $ORT_VERSION already installed in $LIBDIR (sha256 ok)"
else
  # --- download -----------------------------------------------------------------
  if [ -f "$CACHE/$WHEEL" ] && [ "$(sha256_of "$CACHE/$WHEEL")" = "$WHEEL_SHA256" ]; then
    log "cached: $WHEEL (sha256 ok)"
  else
    rm -f "$CACHE/$WHEEL"
    mkdir -p "$CACHE"
    PY="$(pick_python)"
    reqfile="$(mktemp)"; pip_log="$(mktemp)"
    trap 'rm -f "$reqfile" "$pip_log"' EXIT
    printf '%s==%s --hash=sha256:%s\n' "$PACKAGE" "$ORT_VERSION" "$WHEEL_SHA256" >"$reqfile"
    log "downloading $PACKAGE==$ORT_VERSION for $PLATFORM/cp311 from PyPI$([ "$GPU" = 1 ] && echo ' (about 256 MB)')"
    if ! "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
          --platform "$PLATFORM" --python-version 3.11 --implementation cp --abi cp311 \
          --require-hashes -r "$reqfile" -d "$CACHE" >"$pip_log" 2>&1; then
      cat "$pip_log" >&2
      if grep -q 'DO NOT MATCH THE HASHES' "$pip_log"; then
        die "the downloaded $PACKAGE wheel does not have the pinned sha256 $WHEEL_SHA256"
      elif grep -qiE 'NewConnectionError|Max retries|Temporary failure in name resolution|Name or service not known|Network is unreachable|timed out|No matching distribution|Could not find a version' "$pip_log"; then
        die "pip could not fetch $PACKAGE==$ORT_VERSION: the package index (PyPI) cannot be reached from this machine, or does not offer the file"
      fi
      die "pip download of $PACKAGE==$ORT_VERSION failed (see above)"
    fi
    [ -f "$CACHE/$WHEEL" ] || die "pip reported success but $CACHE/$WHEEL is missing"
    [ "$(sha256_of "$CACHE/$WHEEL")" = "$WHEEL_SHA256" ] || die "$WHEEL: sha256 mismatch after download"
    log "downloaded $WHEEL (sha256 ok)"
  fi

  # --- unpack ---------------------------------------------------------------------
  mkdir -p "$LIBDIR"
  rm -f "$LIBDIR/.variant"
  # Another variant (CPU vs GPU) may be here: its provider libraries must go.
  rm -f "$LIBDIR"/libonnxruntime_providers_*.so
  unzip_py="$(command -v python3 || true)"
  [ -n "$unzip_py" ] || unzip_py="$(pick_python)"
  for entry in "${LIBS[@]}"; do
    IFS='|' read -r name sha <<<"$entry"
    tmp="$LIBDIR/.$name.tmp.$$"
    "$unzip_py" - "$CACHE/$WHEEL" "onnxruntime/capi/$name" "$tmp" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    if [ "$(sha256_of "$tmp")" != "$sha" ]; then rm -f "$tmp"; die "$name from $WHEEL: sha256 mismatch"; fi
    chmod 755 "$tmp"
    mv -f "$tmp" "$LIBDIR/$name"
    log "unpacked $LIBDIR/$name (sha256 ok)"
  done
  # Licence texts travel with the binaries.
  "$unzip_py" - "$CACHE/$WHEEL" "$PREFIX" <<'EOF'
import sys, zipfile
wheel, prefix = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    for member, name in (("onnxruntime/LICENSE", "LICENSE"), ("onnxruntime/ThirdPartyNotices.txt", "ThirdPartyNotices.txt")):
        try:
            data = z.read(member)
        except KeyError:
            continue
        open(f"{prefix}/{name}", "wb").write(data)
EOF
  ln -sfn "libonnxruntime.so.$ORT_VERSION" "$LIBDIR/libonnxruntime.so.1"
  ln -sfn "libonnxruntime.so.$ORT_VERSION" "$LIBDIR/libonnxruntime.so"
  echo "$VARIANT" >"$LIBDIR/.variant"
  log "installed $PACKAGE $ORT_VERSION into $LIBDIR"
fi

if [ "$GPU" = 1 ]; then
  log "the CUDA provider needs CUDA 13 and cuDNN 9 libraries on the loader path at run time"
  echo "export LD_LIBRARY_PATH=$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
echo "export ORT_DYLIB_PATH=$LIBDIR/libonnxruntime.so"
