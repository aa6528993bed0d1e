#!/usr/bin/env bash
# Install everything the tests need (Debian's prometheus, the package with its test
# extra) and run the test suite. The README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
    # the Debian package starts a system Prometheus on :9090; the tests run their own
    $SUDO systemctl stop prometheus >/dev/null 2>&1 || $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[test,dashboards]"
python3 -m pytest -q "$@"
