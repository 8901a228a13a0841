#!/usr/bin/env bash
# Create <repo>/.venv (if missing) and install scripts/requirements.txt into it.
#
# Usage: scripts/setup-python.sh [--force]
#   --force   reinstall the requirements even if the venv is up to date
#
# Environment:
#   PYTHON                  interpreter to build the venv from (default: python3)
#   TRIPLINE_VENV           venv location (default: <repo>/.venv)
#   TRIPLINE_VENV_BACKEND   venv | virtualenv (default: venv, falling back to
#                           virtualenv when the interpreter has no working venv/ensurepip)
#
# Needs only python3 and network access to PyPI. Safe to run again: when the
# venv exists and requirements.txt has not changed since the last install, it
# does nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$REPO/scripts/requirements.txt"
VENV="${TRIPLINE_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
BACKEND="${TRIPLINE_VENV_BACKEND:-venv}"
STAMP="$VENV/.tripline-requirements.sha256"
FORCE=0

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup-python: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "setup-python: $*"; }
die() { echo "setup-python: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on PATH (install Python 3.11 or newer, or set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$("$PYTHON" -V 2>&1) is too old: numpy $(grep -m1 '^numpy==' "$REQ" | cut -d= -f3) needs Python >= 3.11"

venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

make_with_venv() {
  "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && venv_ok
}

# Debian/Ubuntu ship the venv module's ensurepip in a separate package.
make_with_apt() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  local pyexe ver
  pyexe="$("$PYTHON" -c 'import sys; print(sys.executable)')"
  case "$pyexe" in /usr/bin/*) ;; *) return 1 ;; esac   # apt only helps the system Python
  ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  log "installing python${ver}-venv with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "python${ver}-venv" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "python${ver}-venv" >/dev/null 2>&1; } \
    || return 1
  rm -rf "$VENV"
  make_with_venv
}

# virtualenv carries its own pip, so it needs no ensurepip. It is installed
# with --target into a cache folder: nothing touches the system Python (and
# PEP 668 "externally managed" interpreters allow it).
make_with_virtualenv() {
  local target="$REPO/.cache/virtualenv"
  "$PYTHON" -m pip --version >/dev/null 2>&1 || return 1
  if ! PYTHONPATH="$target" "$PYTHON" -c 'import virtualenv' >/dev/null 2>&1; then
    log "installing virtualenv into $target"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --disable-pip-version-check --quiet --target "$target" "virtualenv==21.15.11" \
      || return 1
  fi
  rm -rf "$VENV"
  PYTHONPATH="$target" "$PYTHON" -m virtualenv --quiet "$VENV" && venv_ok
}

if venv_ok; then
  log "using existing venv $VENV ($("$VENV/bin/python" -V 2>&1))"
else
  [ -e "$VENV" ] && { log "removing broken venv $VENV"; rm -rf "$VENV"; }
  log "creating venv $VENV from $(command -v "$PYTHON") ($("$PYTHON" -V 2>&1))"
  created=""
  if [ "$BACKEND" = venv ]; then
    if make_with_venv; then
      created="python -m venv"
    else
      rm -rf "$VENV"
      log "'$PYTHON -m venv' did not give a venv with pip (ensurepip missing?); trying fallbacks"
      if make_with_apt; then created="python -m venv (after apt-get install python3-venv)"; fi
    fi
  fi
  if [ -z "$created" ]; then
    make_with_virtualenv && created="virtualenv"
  fi
  [ -n "$created" ] || die "could not create a venv at $VENV: '$PYTHON -m venv' failed, and neither apt-get (python3-venv) nor 'pip install virtualenv' worked. Install the venv module (Debian/Ubuntu: apt-get install python3-venv) or pip, then rerun."
  log "created venv with $created"
fi

want="$( (sha256sum "$REQ" 2>/dev/null || shasum -a 256 "$REQ") | cut -d' ' -f1)"
if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  log "requirements already installed (scripts/requirements.txt unchanged); nothing to do"
else
  log "installing scripts/requirements.txt"
  rm -f "$STAMP"
  pip_log="$(mktemp)"
  trap 'rm -f "$pip_log"' EXIT
  if ! PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQ" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    if grep -qiE 'Could not find a version|No matching distribution|NewConnectionError|Max retries|Temporary failure in name resolution|Network is unreachable|timed out' "$pip_log"; then
      die "pip could not fetch the requirements from the package index (is PyPI reachable from here?)"
    fi
    die "pip install -r scripts/requirements.txt failed (see above)"
  fi
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null || die "'pip check' reports broken requirements in $VENV"
  echo "$want" >"$STAMP"
  log "installed"
fi

log "venv: $VENV ($("$VENV/bin/python" -V 2>&1))"
"$VENV/bin/python" - "$REQ" <<'EOF'
import sys, re
from importlib import metadata
direct = []
for line in open(sys.argv[1]):
    if line.startswith("# --- pulled in"):
        break
    m = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
    if m:
        direct.append(m.group(1))
print("setup-python: " + ", ".join(f"{n} {metadata.version(n)}" for n in direct))
EOF
log "activate with: source $VENV/bin/activate"
