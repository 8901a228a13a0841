#!/usr/bin/env bash
# Regenerate the bundled sample, data/sample/verses.parquet and tiny.parquet,
# from the Debian packages sword-text-kjv and sword-text-web.
#
# Usage: scripts/make-sample.sh [--audit] [--out-dir DIR]
#   (arguments go to scripts/make-sample.py)
#
# Installs the two Debian packages with apt-get when they are missing (as root,
# or through sudo), sets up <repo>/.venv with scripts/setup-python.sh, then runs
# scripts/make-sample.py. The output is deterministic: with the package
# versions below it reproduces the committed files byte for byte, and files
# whose bytes would not change are not rewritten.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(sword-text-kjv sword-text-web)
# The versions the committed sample was built from (data/sample/README.md).
EXPECTED_VERSIONS="sword-text-kjv=14.3-1 sword-text-web=426.0-1"

log() { echo "make-sample: $*"; }
die() { echo "make-sample: error: $*" >&2; exit 1; }

installed_version() {
  dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | awk '$1=="install" && $3=="installed" {print $4}'
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PACKAGES[@]}"; do
    [ -n "$(installed_version "$p")" ] || missing+=("$p")
  done
elif [ ! -d "${SWORD_PATH:-/usr/share/sword}/mods.d" ]; then
  die "not a Debian-based system and no SWORD modules at ${SWORD_PATH:-/usr/share/sword}; install the KJV (engKJV2006eb) and WEB (engWEB2015eb) SWORD modules and set SWORD_PATH"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    die "missing Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}"
  fi
  log "installing ${missing[*]} with apt-get"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
    log "apt-get install failed; running apt-get update and trying again"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
      || die "could not install ${missing[*]} (is the Debian archive reachable?)"
  fi
fi

if command -v dpkg-query >/dev/null 2>&1; then
  have=""
  for p in "${PACKAGES[@]}"; do have="${have:+$have }$p=$(installed_version "$p")"; done
  log "using $have"
  [ "$have" = "$EXPECTED_VERSIONS" ] \
    || log "warning: the committed sample was built from $EXPECTED_VERSIONS; other versions may give different text"
fi

bash "$REPO/scripts/setup-python.sh" | sed 's/^/  /'
exec "$REPO/.venv/bin/python" "$REPO/scripts/make-sample.py" "$@"
