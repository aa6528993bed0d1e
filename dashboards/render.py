"""Render the dashboard's panels from real query results: ``python -m dashboards.render``.

Runs the demo workload (fake OpenAI-compatible server, three agents) through spanmeter's
real endpoint, scrapes it with the real Prometheus (the committed config and rules, 1 s
scrape interval), then runs every panel's queries of ``dashboards/grafana/`` as range
queries and draws them with matplotlib, panel by panel, row by row, into a PNG. The
quality panels come from the demo's LLM judge (the fake server answers it too) scoring
half of the runs.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dashboards import assets

OUT = assets.ROOT / "dashboards" / "panels.png"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is with a 1 s scrape interval
_UNIT_SCALE = {"percentunit": (100, "%"), "percent": (1, "%"), "s": (1, "s"), "reqps": (1, "/s"),
               "currencyUSD": (1, "$"), "x": (1, "x")}  # fmt: skip


def run_workload(seconds: float, rate: float, out=print) -> tuple[dict, float, float]:
    """Drive the demo workload with a Prometheus scraping it; returns (results, start, end)."""
    from prometheus_client import CollectorRegistry

    import spanmeter
    from spanmeter.demo import FakeLLMServer, Workload
    from spanmeter.prometheus import LocalPrometheus

    llm = FakeLLMServer(time_scale=0.5).start()
    judge = spanmeter.LLMJudge(base_url=llm.base_url, model="gpt-4o-mini", timeout=10.0)
    meter = spanmeter.setup(service_name="spanmeter-demo", port=0, registry=CollectorRegistry(),
                            evaluator=spanmeter.Evaluator(judge, sample_rate=0.5))  # fmt: skip
    host, port = meter.address
    workload = Workload(meter, llm.base_url, time_scale=0.5)
    prom = LocalPrometheus(assets.PROMETHEUS_DIR, f"{host}:{port}", scrape_interval="1s", evaluation_interval="1s")
    prom.start()
    out(f"prometheus {prom.url}, spanmeter {meter.metrics_url}: {seconds:g}s of demo traffic at {rate:g} runs/s")
    start = time.time()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            next_run = time.monotonic()
            while time.time() - start < seconds:
                pool.submit(workload.run_once)
                next_run += 1.0 / rate
                time.sleep(max(0.0, next_run - time.monotonic()))
        time.sleep(3)  # the last scrapes and rule evaluations
        end = time.time()
        results = query_panels(prom, start + 5, end)
    finally:
        prom.stop()
        meter.shutdown()
        llm.stop()
    return results, start, end


def query_panels(prom, start: float, end: float) -> dict:
    """Range-query results of every target of every panel: {panel title: [(legend, series)]}."""
    results = {}
    for panel in assets.panels():
        series = []
        for target in panel["targets"]:
            expr = assets.substitute(target["expr"], window=RATE_INTERVAL)
            if "$__range" in target["expr"]:
                expr = assets.substitute(target["expr"], window=f"{int(end - start) + 5}s")
            for s in prom.query_range(expr, start, end, 2):
                legend = re.sub(r"{{\s*(\w+)\s*}}", lambda m: s["metric"].get(m.group(1), ""), target["legendFormat"])
                points = [(float(t), float(v)) for t, v in s["values"] if math.isfinite(float(v))]
                if points:
                    series.append((legend, points))
        results[panel["title"]] = series
    return results


def draw(results: dict, start: float, path: Path, columns: int = 4) -> list[str]:
    """Draw every panel in dashboard order; returns the titles of panels without data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = assets.dashboard()
    layout = []  # (row title, [panels])
    for panel in board["panels"]:
        if panel["type"] == "row":
            layout.append((panel["title"], list(panel.get("panels") or [])))
        elif layout:
            layout[-1][1].append(panel)
    lines = sum(math.ceil(len(panels) / columns) for _, panels in layout)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(4.2 * columns, 2.5 * lines + 0.45 * len(layout) + 0.8), dpi=72)
    fig.suptitle(f"{board['title']}: real Prometheus range queries of the spanmeter demo", fontsize=15, y=0.998)
    grid = fig.add_gridspec(lines + len(layout), columns, height_ratios=sum(
        ([0.18] + [1] * math.ceil(len(p) / columns) for _, p in layout), []), hspace=0.65, wspace=0.25,
        top=0.985, bottom=0.01)  # fmt: skip
    empty, line = [], 0
    for row_title, panels in layout:
        header = fig.add_subplot(grid[line, :])
        header.axis("off")
        header.text(0, 0.2, row_title, fontsize=13, fontweight="bold", color="#8ab8ff")
        line += 1
        for n, panel in enumerate(panels):
            ax = fig.add_subplot(grid[line + n // columns, n % columns])
            _panel(ax, panel, results.get(panel["title"], []), start)
            if not results.get(panel["title"]):
                empty.append(panel["title"])
        line += math.ceil(len(panels) / columns)
    fig.savefig(path, dpi=72, bbox_inches="tight")
    plt.close(fig)
    return empty


def _panel(ax, panel: dict, series: list, start: float) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    scale, suffix = _UNIT_SCALE.get(unit, (1, ""))
    ax.set_title(panel["title"], fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    if panel["type"] == "piechart":
        ax.pie([pts[-1][1] for _, pts in series], labels=[legend for legend, _ in series],
               textprops={"fontsize": 7}, autopct="%1.0f%%")  # fmt: skip
        return
    if panel["type"] in ("stat", "gauge", "bargauge") and len(series) <= 4:
        text = "\n".join(f"{legend}: {_fmt(pts[-1][1] * scale, unit)}" for legend, pts in series[:4])
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11)
        ax.axis("off")
        return
    for legend, pts in series[:10]:
        ax.plot([t - start for t, _ in pts], [v * scale for _, v in pts], label=legend, linewidth=1.2)
    for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
        if panel["type"] == "timeseries" and "custom" in panel["fieldConfig"]["defaults"]:
            ax.axhline(step["value"] * scale, color=step["color"], linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds", fontsize=7)
    if suffix:
        ax.set_ylabel(suffix, fontsize=7)
    ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.3)


def _fmt(value: float, unit: str) -> str:
    if unit == "currencyUSD":
        return f"${value:,.4f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.render", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of demo traffic (default 90)")
    parser.add_argument("--rate", type=float, default=8.0, help="agent runs per second (default 8)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(assets.ROOT)})")
    args = parser.parse_args(argv)
    results, start, _end = run_workload(args.seconds, args.rate)
    empty = draw(results, start + 5, args.out)
    print(f"wrote {args.out}: {len(results) - len(empty)} of {len(results)} panels with data")
    for title in empty:
        print(f"  no data: {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
