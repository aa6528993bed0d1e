"""The ``spanmeter`` command. ``main(argv) -> int`` so tests call it directly."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def _silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (``spanmeter catalog | head``),
    so the interpreter's last flush does not fail too (the recipe of Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests capturing output)
        pass


def _demo_line(line: str) -> None:
    """Print one demo line; a closed pipe stops the demo as Ctrl-C would."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _silence_stdout()
        raise KeyboardInterrupt from None


def _demo(args) -> int:
    from spanmeter.config import ConfigurationError
    from spanmeter.demo import run_demo

    if args.rate <= 0:
        print("spanmeter demo: --rate must be > 0", file=sys.stderr)
        return 2
    if args.duration < 0:
        print("spanmeter demo: --duration must be >= 0", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)  # stop cleanly under a process manager too
    try:
        return run_demo(duration=args.duration, rate=args.rate, host=args.host, port=args.port,
                        prometheus=args.prometheus, out=_demo_line)  # fmt: skip
    except ConfigurationError as exc:
        print(f"spanmeter demo: {exc}", file=sys.stderr)
        return 2


def _assets(args) -> int:
    from spanmeter import assets

    try:
        paths = assets.export(args.directory, overwrite=args.force)
    except (FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"spanmeter assets export: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print(f"{len(paths)} files in {args.directory}: import grafana/*.json into Grafana; put prometheus/*.rules.yml "
          "beside your prometheus.yml (rule_files); `promtool test rules prometheus/alerts.test.yml` tests the alerts",
          file=sys.stderr)  # fmt: skip
    return 0


def _catalog(args) -> int:
    from spanmeter import catalog

    if args.update:
        path = Path(args.update)
        text = path.read_text(encoding="utf-8")
        fresh = catalog.update_readme(text)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            print(f"updated the metric table in {path}")
        else:
            print(f"the metric table in {path} is up to date")
        return 0
    print(catalog.markdown_table())
    return 0


def _prices(args) -> int:
    import datetime as dt

    from spanmeter.errors import ConfigurationError
    from spanmeter.pricing import Pricer, load_overrides

    if args.check:
        try:
            entries = load_overrides(args.check)
        except ConfigurationError as exc:
            print(f"spanmeter prices: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check}: {len(entries)} price entries, valid")
        return 0
    if not args.model:
        print("spanmeter prices: give a MODEL, or --check FILE", file=sys.stderr)
        return 2
    try:
        pricer = Pricer.create(args.prices)
    except ConfigurationError as exc:
        print(f"spanmeter prices: {exc}", file=sys.stderr)
        return 2
    when = dt.datetime.now(dt.timezone.utc)
    rates, _ = pricer.resolve(args.provider, args.model, None, when)
    if rates is None:
        print(f"no price for model {args.model!r}" + (f" of provider {args.provider!r}" if args.provider else "")
              + ": its calls would count in agent_unpriced_calls_total; add it to a price file")  # fmt: skip
        return 1
    print(f"{args.model}: {rates.origin} (source: {rates.source}), in force {when:%Y-%m-%d}")
    print("dollars per million tokens:")
    for name, text in rates.per_million().items():
        print(f"  {name:<12} {text}")
    return 0


def _top(args) -> int:
    from spanmeter.top import main as top_main

    return top_main(args)


TOP_EPILOG = """\
Rates are computed by top itself between consecutive readings (a counter that drops was
reset, as in Prometheus); latency quantiles use histogram_quantile's interpolation.
--once and --json need two readings: they scrape the endpoint twice, --interval seconds
apart, print the rates between the two scrapes and exit (1 if the endpoint cannot be
read). If the exposition carries sample timestamps, those are used. With --prometheus
one query suffices: the figures are between Prometheus' own last two scrapes.
Keys: 1-4 or Tab switch view, s sort column, r reverse, / filter (Enter ends, Esc
clears), q quit."""


def main(argv: list[str] | None = None) -> int:
    from spanmeter import __version__

    parser = argparse.ArgumentParser(prog="spanmeter", description="AI agent spans in, Prometheus metrics out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve /metrics from a local workload of agents against a fake LLM server")
    demo.add_argument("--duration", type=float, default=0.0, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=4.0, help="agent runs per second (default: 4)")
    demo.add_argument("--port", type=int, default=None,
                      help="metrics port (default: $OTEL_EXPORTER_PROMETHEUS_PORT or 9464; 0 picks a free one)")
    demo.add_argument("--host", default=None,
                      help="metrics address (default: $OTEL_EXPORTER_PROMETHEUS_HOST or 127.0.0.1)")
    demo.add_argument("--prometheus", action="store_true",
                      help="also start the `prometheus` on PATH on 127.0.0.1 with spanmeter's scrape config "
                           "and rules (shipped with the package) and print its URL")
    demo.set_defaults(run=_demo)
    cat = sub.add_parser("catalog", help="print the metric table generated from the catalogue")
    cat.add_argument("--update", metavar="README", help="rewrite the table between the markers in this file")
    cat.set_defaults(run=_catalog)
    prices = sub.add_parser("prices", help="show the price spanmeter uses for a model, or check a price file")
    prices.add_argument("model", nargs="?", help="model name as it appears on spans")
    prices.add_argument("--provider", help="provider name (gen_ai.provider.name)")
    prices.add_argument("--prices", metavar="FILE", help="price override file (TOML) to apply")
    prices.add_argument("--check", metavar="FILE", help="validate a price override file and exit")
    prices.set_defaults(run=_prices)
    assets = sub.add_parser("assets", help="the Grafana dashboard, Prometheus scrape configs and rules shipped with spanmeter")
    assets_sub = assets.add_subparsers(dest="action", required=True)
    export = assets_sub.add_parser("export", help="write them to DIR/grafana/ and DIR/prometheus/")
    export.add_argument("directory", metavar="DIR")
    export.add_argument("--force", action="store_true", help="overwrite files that differ")
    export.set_defaults(run=_assets)
    top = sub.add_parser("top", help="the agent dashboard in a terminal, live (needs the `top` extra: rich)",
                         description="Live per-agent, per-model, per-tool and quality figures from a "
                                     "spanmeter /metrics endpoint or a Prometheus server.",
                         epilog=TOP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("url", nargs="?", help="metrics endpoint (default: http://127.0.0.1:9464/metrics)")
    top.add_argument("--prometheus", metavar="URL",
                     help="read through a Prometheus server's HTTP query API at URL (e.g. http://127.0.0.1:9090)")
    top.add_argument("--interval", type=float, default=None,
                     help="seconds between readings (default: 2; with --prometheus 15)")
    top.add_argument("--history", type=float, default=5.0, help="minutes of readings kept for sparklines (default: 5)")
    top.add_argument("--view", choices=("agents", "models", "tools", "quality"),
                     help="view to show first (with --once/--json: only this view; default: all)")
    top.add_argument("--once", action="store_true",
                     help="scrape twice, --interval apart, print the rates as plain-text tables and exit")
    top.add_argument("--json", action="store_true",
                     help="the same as --once, as JSON (null where a figure is undefined)")
    top.set_defaults(run=_top)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader of our output went away: not an error of ours
        _silence_stdout()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
