"""collector/otelcol.yaml against the documented keys of each component and the wiring rules.

No Collector with these components can be installed on these machines, so the config is
never run here: these tests check what can be checked without one. Every key and value
type against ``collector/schema.yaml`` (the documented keys, with their sources); every
pipeline reference defined, every definition used, signal types matching; and the
Prometheus names the config yields against spanmeter's catalogue. The OTTL text is not
parsed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from spanmeter import catalog
from spanmeter.catalog import COUNTER, GAUGE, HISTOGRAM, METRICS
from spanmeter.conventions import MODALITIES

COLLECTOR = Path(__file__).resolve().parent.parent / "collector"
SECTIONS = ("receivers", "processors", "exporters", "connectors")
SIGNALS = ("traces", "metrics", "logs")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_ID = re.compile(r"^([a-z][a-z0-9_]*)(/[^/\s]+)?$")


def load(name: str) -> dict:
    return yaml.safe_load((COLLECTOR / name).read_text())


# --- the validator ------------------------------------------------------------------------
def check_value(value, spec, path: str) -> list[str]:
    """Errors of ``value`` against a schema ``spec`` (see collector/schema.yaml's header)."""
    if isinstance(spec, dict):
        if value is None:
            return []  # an empty section, as `batch:` alone
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {value!r}"]
        errors = [f"{path}.{key}: not a documented key (documented: {sorted(spec)})" for key in value if key not in spec]
        for key, item in value.items():
            if key in spec:
                errors += check_value(item, spec[key], f"{path}.{key}")
        return errors
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [e for i, item in enumerate(value) for e in check_value(item, spec[0], f"{path}[{i}]")]
    if spec.startswith("enum:"):
        allowed = spec[5:].split("|")
        return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
    ok = {
        "string": lambda v: isinstance(v, str),
        "ottl": lambda v: isinstance(v, str) and v.strip() != "",
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "duration": lambda v: isinstance(v, str) and bool(_DURATION.match(v)),
        "any": lambda v: True,
    }[spec]
    return [] if ok(value) else [f"{path}: {value!r} is not a {spec}"]


def component_type(section: str, component_id: str, schema: dict) -> tuple[str | None, list[str]]:
    match = _ID.match(component_id)
    if not match:
        return None, [f"{section}.{component_id}: not a component id (type or type/name)"]
    kind = match.group(1)
    known = schema[section]
    if kind in known:
        return kind, []
    renamed = [new for new, entry in known.items() if entry.get("deprecated_type") == kind]
    if renamed:
        return renamed[0], [f"{section}.{component_id}: {kind} is the deprecated name of {renamed[0]}"]
    return None, [f"{section}.{component_id}: unknown {section[:-1]} type {kind!r}"]


def validate(config: dict, schema: dict) -> list[str]:
    """Every error of the config: keys and types, then the pipeline wiring."""
    errors = [f"{key}: not a top-level section" for key in config if key not in (*SECTIONS, "extensions", "service")]
    types: dict[tuple[str, str], str] = {}
    for section in SECTIONS:
        for component_id, body in (config.get(section) or {}).items():
            kind, problems = component_type(section, component_id, schema)
            errors += problems
            if kind is not None:
                types[section, component_id] = kind
                errors += check_value(body, schema[section][kind]["config"], f"{section}.{component_id}")

    pipelines = (config.get("service") or {}).get("pipelines") or {}
    used: set[tuple[str, str]] = set()
    connector_ends: dict[str, dict[str, set]] = {}
    for pipeline_id, pipeline in pipelines.items():
        signal = pipeline_id.split("/")[0]
        if signal not in SIGNALS:
            errors.append(f"service.pipelines.{pipeline_id}: unknown signal {signal!r}")
            continue
        for role in ("receivers", "exporters"):
            if not pipeline.get(role):
                errors.append(f"service.pipelines.{pipeline_id}: needs at least one of {role}")
        for role, sections in (("receivers", ("receivers", "connectors")), ("processors", ("processors",)),
                               ("exporters", ("exporters", "connectors"))):  # fmt: skip
            for ref in pipeline.get(role) or []:
                where = next((s for s in sections if (s, ref) in types), None)
                if where is None:
                    errors.append(f"service.pipelines.{pipeline_id}.{role}: {ref!r} is not defined")
                    continue
                used.add((where, ref))
                entry = schema[where][types[where, ref]]
                if where == "connectors":
                    end = "exporter" if role == "exporters" else "receiver"
                    connector_ends.setdefault(ref, {"exporter": set(), "receiver": set()})[end].add(signal)
                elif signal not in entry["signals"]:
                    errors.append(f"service.pipelines.{pipeline_id}: {ref} does not support {signal}")
    for ref, ends in connector_ends.items():
        pairs = {tuple(p) for p in schema["connectors"][types["connectors", ref]]["pipelines"]}
        if not ends["exporter"] or not ends["receiver"]:
            errors.append(f"connectors.{ref}: a connector must end one pipeline and start another")
        for a in ends["exporter"]:
            for b in ends["receiver"]:
                if (a, b) not in pairs:
                    errors.append(f"connectors.{ref}: cannot connect {a} to {b} (supports {sorted(pairs)})")
    errors += [f"{section}.{ref}: defined but used in no pipeline" for section, ref in types if (section, ref) not in used]
    return errors


# --- the config passes --------------------------------------------------------------------------
def test_the_collector_config_uses_only_documented_keys_and_valid_wiring():
    assert validate(load("otelcol.yaml"), load("schema.yaml")) == []


def test_the_config_uses_the_current_component_names():
    config = load("otelcol.yaml")
    assert set(config["connectors"]) == {"span_metrics", "signal_to_metrics"}
    assert load("schema.yaml")["contrib_version"] in (COLLECTOR / "otelcol.yaml").read_text()


def test_every_pipeline_starts_with_the_memory_limiter_and_batches():
    # memory_limiter README: "should be placed as the first processor"; batch after it
    for pipeline_id, pipeline in load("otelcol.yaml")["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", pipeline_id
        assert "batch" in pipeline["processors"], pipeline_id


def test_derived_metrics_pass_deltatocumulative_before_the_prometheus_exporter():
    pipelines = load("otelcol.yaml")["service"]["pipelines"]
    for pipeline in pipelines.values():
        if "signal_to_metrics" in pipeline["receivers"]:
            assert "deltatocumulative" in pipeline["processors"] and pipeline["exporters"] == ["prometheus"]


def test_cardinality_limits_and_exemplars_are_on():
    config = load("otelcol.yaml")
    assert config["connectors"]["span_metrics"]["aggregation_cardinality_limit"] > 0
    assert config["processors"]["deltatocumulative"]["max_streams"] > 0
    assert config["connectors"]["span_metrics"]["exemplars"]["enabled"] is True
    assert config["exporters"]["prometheus"]["enable_open_metrics"] is True  # exemplars need OpenMetrics


def test_listening_addresses_default_to_loopback():
    text = (COLLECTOR / "otelcol.yaml").read_text()
    defaults = re.findall(r"\$\{env:[A-Z_]+:-([^}]+)\}", text)
    assert defaults and all(d.startswith("127.0.0.1:") for d in defaults)


# --- the validator can fail ------------------------------------------------------------------
def _broken(edit) -> list[str]:
    config = copy.deepcopy(load("otelcol.yaml"))
    edit(config)
    return validate(config, load("schema.yaml"))


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda c: c["exporters"]["prometheus"].update(add_metric_suffix=True), "prometheus.add_metric_suffix: not a documented key"),
        (lambda c: c["processors"]["batch"].update(timeout=5), "processors.batch.timeout: 5 is not a duration"),
        (lambda c: c["connectors"]["span_metrics"]["histogram"].update(unit="min"), "is not one of ['ms', 's']"),
        (lambda c: c["connectors"]["signal_to_metrics"]["spans"][0]["sum"].update(is_monotonic=True), "sum.is_monotonic: not a documented key"),
        (lambda c: c["service"]["pipelines"]["metrics"]["processors"].append("filter/noise"), "'filter/noise' is not defined"),
        (lambda c: c["processors"].update({"batch/unused": {}}), "processors.batch/unused: defined but used in no pipeline"),
        (lambda c: c["service"]["pipelines"]["traces/derive"]["processors"].append("deltatocumulative"), "deltatocumulative does not support traces"),
        (lambda c: c["service"]["pipelines"]["metrics"]["exporters"].append("span_metrics"), "cannot connect metrics to metrics"),
        (lambda c: c["connectors"].update(spanmetrics=c["connectors"].pop("span_metrics")), "spanmetrics is the deprecated name of span_metrics"),
    ],
)  # fmt: skip
def test_the_validator_catches_each_kind_of_mistake(edit, error):
    errors = _broken(edit)
    assert any(error in e for e in errors), errors


# --- the names that reach Prometheus ---------------------------------------------------------------
# The translation of the Collector's prometheus exporter with UnderscoreEscapingWithSuffixes
# (github.com/prometheus/otlptranslator, metric_namer.go normalizeName and unitMap; the
# OTel -> Prometheus compatibility spec): tokens of [a-zA-Z0-9:], the unit word unless a
# token already, `_total` for monotonic sums, `_ratio` for gauges of unit "1"; "{...}"
# annotations are no unit; label names get every other character as "_".
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "By": "bytes", "1": "", "%": "percent"}


_PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def prometheus_name(name: str, unit: str, kind: str) -> str:
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    unit, _, per = (unit or "").partition("/")  # "{token}/s": per second
    word = _UNIT_WORDS.get(unit, "" if re.fullmatch(r"\{.*\}", unit or "") else unit)
    if word and word not in tokens:
        tokens.append(word)
    per = _PER_UNIT_WORDS.get(per, per)
    if per and not ("per" in tokens and per in tokens):
        tokens += ["per", per]
    if kind == COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if kind == GAUGE and unit == "1":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _transform_units(spec) -> str:
    """The unit after collector/otelcol.yaml's transform/spanmeter_units."""
    return "" if spec.unit == "1" and spec.kind == GAUGE else spec.unit


def test_spanmeters_own_pushed_metrics_keep_their_prometheus_names_through_the_collector():
    assert prometheus_name("agent_quality_score", "1", GAUGE) == "agent_quality_score_ratio"  # without the fix
    for spec in METRICS:
        assert prometheus_name(spec.name, _transform_units(spec), spec.kind) == spec.exposed_name, spec.name
        keys = [k for k, _ in spec.labels] + ([spec.fan_out[0]] if spec.fan_out else [])
        assert tuple(label_name(k) for k in keys) == spec.exposed_labels


def _derived() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for definition in load("otelcol.yaml")["connectors"]["signal_to_metrics"]["spans"]:
        out.setdefault(definition["name"], []).append(definition)
    return out


def test_metrics_derived_from_spans_have_spanmeters_names_units_buckets_and_labels():
    derived = _derived()
    for name, definitions in derived.items():
        spec = catalog.BY_NAME[name]
        for d in definitions:
            kind = COUNTER if "sum" in d else HISTOGRAM
            assert kind == spec.kind, name
            if kind == COUNTER:
                assert d["sum"]["monotonic"] is True, name  # else Prometheus shows a gauge without _total
            else:
                assert tuple(float(b) for b in d["histogram"]["buckets"]) == spec.buckets, name
            assert d["unit"] == spec.unit
            assert prometheus_name(name, d["unit"], kind) == spec.exposed_name
            assert sorted(label_name(a["key"]) for a in d["attributes"]) == sorted(spec.exposed_labels), name
        if spec.fan_out and spec.fan_out[1]:  # one definition per value of the fanned-out label, each once
            key, values = spec.fan_out
            defaults = [a["default_value"] for d in definitions for a in d["attributes"] if a["key"] == key]
            assert sorted(defaults) == sorted(values), name
        elif spec.fan_out and spec.fan_out[0] == "gen_ai.token.modality":  # the modalities the span splits
            defaults = [a["default_value"] for d in definitions for a in d["attributes"] if a["key"] == "gen_ai.token.modality"]
            assert len(defaults) == len(set(defaults)) and set(defaults) <= set(MODALITIES) and "unknown" in defaults


def test_what_single_spans_cannot_give_is_the_documented_difference():
    derivable = set(_derived())
    readme = (COLLECTOR / "README.md").read_text()
    for spec in METRICS:
        if spec.name not in derivable:
            assert f"`{spec.exposed_name}`" in readme, f"collector/README.md does not say why {spec.exposed_name} is not derived"
