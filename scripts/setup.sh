#!/usr/bin/env bash
# Create a virtual environment (default .venv) and install spanmeter into it, with the
# extras given as the first argument (e.g. "test,dashboards"). Works on a fresh Debian or
# Ubuntu, where the system Python refuses `pip install` (externally-managed-environment):
# installs python3-venv with apt-get when the venv module cannot create environments.
#   bash scripts/setup.sh && .venv/bin/spanmeter demo
# Environment: VENV (directory, default .venv), PYTHON (default python3), EDITABLE=1
# (install with -e, as scripts/test.sh does), PIP_CONSTRAINTS (a constraints file).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${1:-}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "setup: needs root for: $* (run it as root, then again)" >&2; exit 1
    fi
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup: no $PYTHON on PATH; Debian/Ubuntu: apt-get install python3 python3-venv" >&2
    exit 1
fi
"$PYTHON" - <<'PY' || { echo "setup: spanmeter needs Python 3.10 or newer" >&2; exit 1; }
import sys
raise SystemExit(sys.version_info < (3, 10))
PY

if [ ! -x "$VENV/bin/python" ]; then
    # Debian and Ubuntu ship the venv module without ensurepip unless python3-venv is installed
    if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
        echo "setup: installing python3-venv (apt-get)" >&2
        as_root apt-get update -qq
        version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null \
            || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "python${version}-venv" >/dev/null
    fi
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

target="."
[ -n "$EXTRAS" ] && target=".[$EXTRAS]"
args=(--quiet --disable-pip-version-check)
[ "${EDITABLE:-0}" = "1" ] && args+=(-e)
[ -n "${PIP_CONSTRAINTS:-}" ] && args=(--constraint "$PIP_CONSTRAINTS" "${args[@]}")
echo "setup: installing $target into $VENV" >&2
"$VENV/bin/python" -m pip install "${args[@]}" "$target"
