"""The ``spanmeter`` command. ``main(argv) -> int`` so tests call it directly."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def _sigterm(signum, frame):
    raise KeyboardInterrupt


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
                        prometheus=args.prometheus, out=lambda line: print(line, flush=True))  # fmt: skip
    except ConfigurationError as exc:
        print(f"spanmeter demo: {exc}", file=sys.stderr)
        return 2


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spanmeter", description="AI agent spans in, Prometheus metrics out.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve /metrics from a local workload of agents against a fake LLM server")
    demo.add_argument("--duration", type=float, default=0.0, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=4.0, help="agent runs per second (default: 4)")
    demo.add_argument("--port", type=int, default=None,
                      help="metrics port (default: $OTEL_EXPORTER_PROMETHEUS_PORT or 9464; 0 picks a free one)")
    demo.add_argument("--host", default=None,
                      help="metrics address (default: $OTEL_EXPORTER_PROMETHEUS_HOST or 127.0.0.1)")
    demo.add_argument("--prometheus", action="store_true",
                      help="also start the `prometheus` on PATH on 127.0.0.1 with dashboards/prometheus/ "
                           "(scrape config and rules) and print its URL")
    demo.set_defaults(run=_demo)
    cat = sub.add_parser("catalog", help="print the metric table generated from the catalogue")
    cat.add_argument("--update", metavar="README", help="rewrite the table between the markers in this file")
    cat.set_defaults(run=_catalog)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
