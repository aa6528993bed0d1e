#!/usr/bin/env bash
# The README's test command; .ci/run calls it. Needs no venv active and works on a fresh
# Debian/Ubuntu as root (or with sudo):
#   1. Debian's prometheus/promtool (the tests run a real one; the system service is stopped);
#   2. .venv with spanmeter (editable) and its test extras (scripts/setup.sh);
#   3. mypy on the package (it ships py.typed);
#   4. the whole suite on every core (pytest-xdist), with progress;
#   5. the compatibility subset against the oldest supported OpenTelemetry (1.39), with
#      google-adk, in .venv-lowest (scripts/lowest-constraints.txt).
# With arguments, only step 4 runs, with them: `bash scripts/test.sh tests/test_cli.py -x`.
# PYTEST_WORKERS (default: auto, one per core) sets pytest's -n.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "prometheus and promtool"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq prometheus >/dev/null
    # the package starts a system Prometheus on :9090; the tests run their own on free ports
    as_root systemctl stop prometheus >/dev/null 2>&1 || as_root service prometheus stop >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1

step "venv .venv: spanmeter[test,dashboards]"
VENV=.venv EDITABLE=1 bash scripts/setup.sh test,dashboards
PY=.venv/bin/python
# as an activated venv would: tests run the `spanmeter` console script as a user does
export PATH="$PWD/.venv/bin:$PATH"
WORKERS="${PYTEST_WORKERS:-auto}"
# loadfile: a module's tests stay on one worker, so a module-scoped Prometheus starts once
PYTEST=("$PY" -m pytest -n "$WORKERS" --dist loadfile -p no:cacheprovider)

if [ "$#" -gt 0 ]; then
    step "pytest $*"
    exec "${PYTEST[@]}" "$@"
fi

step "mypy (the typed public API)"
"$PY" -m mypy

step "test suite (newest dependencies)"
"$PY" -c 'import importlib.metadata as m; print("opentelemetry-sdk", m.version("opentelemetry-sdk"))'
"${PYTEST[@]}" --durations=15

step "compatibility subset (oldest supported OpenTelemetry, google-adk) in .venv-lowest"
VENV=.venv-lowest EDITABLE=1 PIP_CONSTRAINTS=scripts/lowest-constraints.txt bash scripts/setup.sh otlp
.venv-lowest/bin/python -m pip install --quiet --disable-pip-version-check \
    --constraint scripts/lowest-constraints.txt pytest pytest-xdist hypothesis pyyaml cryptography google-adk
.venv-lowest/bin/python -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in
    ("opentelemetry-sdk", "opentelemetry-exporter-prometheus", "google-adk")), sep=", ")'
# processor, export (exposition, OTLP push, endpoint), configuration, recorded fixtures, the live ADK run
subset=(tests/test_compat.py tests/test_processor.py tests/test_config.py tests/test_emit.py tests/test_otlp.py
        tests/test_otlp_fork.py tests/test_hostile_input.py tests/test_concurrency.py tests/test_conventions.py
        tests/test_span_fixtures.py tests/test_instrumentations.py tests/test_counted_once.py tests/test_recording.py
        tests/test_conversations.py tests/test_quality.py tests/test_endpoint_security.py tests/test_catalog.py
        tests/test_adk_live.py tests/test_exemplars.py tests/test_genai_names.py tests/test_genai_events.py
        tests/test_attribution.py tests/test_series_ttl.py tests/test_cost_attributes.py)
present=()
for f in "${subset[@]}"; do [ -f "$f" ] && present+=("$f"); done
export PATH="$PWD/.venv-lowest/bin:${PATH#"$PWD/.venv/bin:"}"
# Deselected, known differences of the oldest SDK:
# - joining an app's MeterProvider needs opentelemetry-sdk 1.43 (test_compat.py checks the error below it);
# - before 1.44 a TracerProvider inherited through fork keeps the parent's resource, so a worker
#   configured after the parent was reuses its service.instance.id (spanmeter.otlp.instance_resource
#   must renew an id it made in another process).
.venv-lowest/bin/python -m pytest -n "$WORKERS" --dist loadfile -p no:cacheprovider "${present[@]}" \
    --deselect tests/test_config.py::test_joins_a_meter_provider_the_app_already_has \
    --deselect tests/test_otlp.py::test_joins_the_apps_meter_provider_and_leaves_it_working_after_shutdown \
    --deselect tests/test_otlp_fork.py::test_configured_before_fork_the_inherited_push_stays_quiet_and_workers_reconfigure
