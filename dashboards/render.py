"""Render the dashboard's panels from real query results: ``python -m dashboards.render``.

Runs the demo workload (fake OpenAI-compatible server, three agents) through spanmeter's
real endpoint, scrapes it with the real Prometheus (the committed config and rules, 1 s
scrape interval), then runs every panel's queries of ``dashboards/grafana/`` as range
queries and draws them with matplotlib into a PNG: each panel where the dashboard's grid
puts it and as its type draws it (time series, stat with its sparkline, gauge, bar gauge,
pie chart), legends under the plots as Grafana places them. The quality panels come from
the demo's LLM judge (the fake server answers it too) scoring half of the runs.

Windows that fit the run: the dashboard's fixed long windows (cost per hour, burn rates,
escalation ratio over 1 h, tokens per run over 30 min and 1 day, read from the recording
rules) would run over a demo of a minute or two, so a 1 h rate would be the run's total
spread over an hour. The picture expands those recorded series into their rules'
expressions and shortens windows above :data:`SHORT_WINDOW` seconds to it, and day-long
windows to the whole run; the picture says so in its subtitle.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dashboards import assets

OUT = assets.ROOT / "dashboards" / "panels.png"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is with a 1 s scrape interval
SHORT_WINDOW = 30  # seconds: what a window longer than that (1 h, 30 min, 5 min) becomes
STEP = 2  # seconds between points of the range queries
_DAY = 86400
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": _DAY, "w": 7 * _DAY, "y": 365 * _DAY}
# Grafana's dark theme and its classic palette
_BG, _PANEL, _BORDER, _TEXT, _DIM = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
_PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
            "#37872d", "#fade2a", "#447ebc", "#c15c17", "#fa6400", "#0a50a1", "#806eb7", "#96d98d"]  # fmt: skip
_COLORS = {"green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "blue": "#5794f2", "orange": "#ff9830",
           "purple": "#b877d9", "text": _TEXT}  # fmt: skip
# Layout, in display pixels at the README's width (the PNG is drawn at twice that)
_WIDTH_PX, _UNIT_PX, _ROW_PX, _DPI = 1000, 26, 30, 144
_FONT = 8.5  # points at 72 per inch: pixels at the display scale
_LEGEND_ROW = 13.5  # display pixels per legend line (8.5-point text)


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
        results = query_panels(prom, start + 5, end, run_start=start)
    finally:
        prom.stop()
        meter.shutdown()
        llm.stop()
    return results, start, end


# --- queries ---------------------------------------------------------------------------------


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * _DURATION[duration[-1]]


def fit_windows(expr: str, run_seconds: int, recorded: dict[str, str] | None = None) -> str:
    """``expr`` with recorded series expanded into their rules' expressions and windows fitted
    to a run of ``run_seconds``: day-long and longer ones cover the run, others above
    :data:`SHORT_WINDOW` seconds are shortened to it. Only match-all selectors are expanded."""
    if recorded is None:
        recorded = {r["record"]: r["expr"] for r in assets.recording_rules() if "labels" not in r}  # budgets: one value per label
    for _ in range(5):  # recorded series built on recorded series
        changed = False
        for name in sorted(recorded, key=len, reverse=True):
            pattern = rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?(?![\w:])"

            def expand(m, name=name):
                matchers = [x.strip() for x in (m.group(1) or "{}")[1:-1].split(",") if x.strip()]
                if all(re.fullmatch(r'\w+=~"\.\*"', x) for x in matchers):
                    return f"({recorded[name]})"
                return m.group(0)

            new = re.sub(pattern, expand, expr)
            changed |= new != expr
            expr = new
        if not changed:
            break

    def window(m):
        seconds = _seconds(m.group(1))
        if seconds >= _DAY:
            return f"[{run_seconds}s]"
        return f"[{SHORT_WINDOW}s]" if seconds > SHORT_WINDOW else m.group(0)

    return re.sub(r"\[(\d+[smhdwy])\]", window, expr)


def query_panels(prom, start: float, end: float, *, run_start: float | None = None) -> dict:
    """Range-query results of every target of every panel: {panel title: [(legend, series)]}.

    Windows fit the run that began at ``run_start`` (default ``start``): see
    :func:`fit_windows`; ``$__range`` is the run so far.
    """
    run_seconds = int(end - (start if run_start is None else run_start)) + 5
    recorded = {r["record"]: r["expr"] for r in assets.recording_rules() if "labels" not in r}  # budgets: one value per label
    results = {}
    for panel in assets.panels():
        series = []
        for target in panel["targets"]:
            raw = target["expr"].replace("$__range", f"{run_seconds}s")
            expr = fit_windows(assets.substitute(raw, window=RATE_INTERVAL), run_seconds, recorded)
            for s in prom.query_range(expr, start, end, STEP):
                legend = re.sub(r"{{\s*(\w+)\s*}}", lambda m, labels=s["metric"]: labels.get(m.group(1), ""), target["legendFormat"])
                points = [(float(t), float(v)) for t, v in s["values"] if math.isfinite(float(v))]
                if points:
                    series.append((legend, points))
        results[panel["title"]] = series
    return results


# --- layout ----------------------------------------------------------------------------------


def layout(board: dict) -> list[tuple[dict, tuple[int, int, int, int]]]:
    """(panel or row, (x, y, w, h)) in grid units, as Grafana places them: a panel reaching
    past the 24 columns moves left, then down below whatever it would overlap."""
    placed: list[tuple[dict, tuple[int, int, int, int]]] = []
    items = []
    for panel in board["panels"]:
        items.append(panel)
        if panel["type"] == "row":
            items.extend(panel.get("panels") or [])

    def overlaps(x, y, w, h):
        return any(x < px + pw and px < x + w and y < py + ph and py < y + h for _, (px, py, pw, ph) in placed)

    for panel in items:
        g = panel["gridPos"]
        x, y, w, h = min(g["x"], 24 - g["w"]), g["y"], g["w"], g["h"]
        while overlaps(x, y, w, h):
            y += 1
        placed.append((panel, (x, y, w, h)))
    # then Grafana's vertical compaction: each panel, top first, moves up into free space
    order, placed = sorted(placed, key=lambda item: (item[1][1], item[1][0])), []
    for panel, (x, y, w, h) in order:
        while y > 0 and not overlaps(x, y - 1, w, h):
            y -= 1
        placed.append((panel, (x, y, w, h)))
    return placed


def draw(results: dict, start: float, path: Path, *, note: str | None = None) -> list[str]:
    """Draw every panel where the dashboard puts it; returns the titles of panels without data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = assets.dashboard()
    placed = layout(board)
    # rows are one unit high in Grafana; draw them a little taller, panels by height unit
    heights: dict[int, int] = {}
    for panel, (_x, y, _w, h) in placed:
        for unit in range(y, y + h):
            heights[unit] = _ROW_PX if panel["type"] == "row" else max(heights.get(unit, 0), _UNIT_PX)
    units = max(y + h for _, (_x, y, _w, h) in placed)
    top_px = 58
    offset = [top_px]
    for unit in range(units):
        offset.append(offset[-1] + heights.get(unit, _UNIT_PX))
    total_px = offset[-1] + 8
    fig = plt.figure(figsize=(_WIDTH_PX / 72, total_px / 72), dpi=72, facecolor=_BG)
    plt.rcParams.update({"font.size": _FONT, "text.color": _TEXT, "axes.labelcolor": _DIM,
                         "xtick.color": _DIM, "ytick.color": _DIM, "axes.edgecolor": _BORDER})  # fmt: skip
    fig.text(0.01, 1 - 10 / total_px, f"{board['title']}: real Prometheus range queries of the spanmeter demo",
             fontsize=14, va="top", color=_TEXT)  # fmt: skip
    if note:
        fig.text(0.01, 1 - 34 / total_px, note, fontsize=_FONT, va="top", color=_DIM)
    col_px = (_WIDTH_PX - 8) / 24
    empty = []
    for panel, (x, y, w, h) in placed:
        left, right = 4 + x * col_px, 4 + (x + w) * col_px
        top, bottom = offset[y], offset[y + h]
        rect = [left / _WIDTH_PX, 1 - bottom / total_px, (right - left) / _WIDTH_PX, (bottom - top) / total_px]
        if panel["type"] == "row":
            fig.text(rect[0] + 2 / _WIDTH_PX, rect[1] + rect[3] / 2, panel["title"], fontsize=12,
                     fontweight="bold", va="center", color=_TEXT)  # fmt: skip
            continue
        series = results.get(panel["title"], [])
        if not series:
            empty.append(panel["title"])
        _Panel(fig, panel, series, start, rect, (right - left - 4, bottom - top - 4)).draw()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor=_BG)
    plt.close(fig)
    # 256 colours without dithering look the same and weigh a third (Pillow comes with matplotlib)
    from PIL import Image

    image = Image.open(buffer).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return empty


# --- panels ----------------------------------------------------------------------------------


def _threshold_color(defaults: dict, value: float) -> str:
    color = "green"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return _COLORS.get(color, color)


def _is_count(panel: dict) -> bool:
    """Stat and bar gauge panels of plain numbers show counts (calls, tokens, conversations)."""
    return panel["type"] in ("stat", "bargauge") and panel["fieldConfig"]["defaults"].get("unit") in ("short", None)


def fmt(value: float, unit: str | None, *, count: bool = False) -> str:
    """A value as the panel's unit shows it; counts as integers."""
    if count:
        return f"{round(value):,}"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "percent":
        return f"{value:.3g}%"
    if unit == "currencyUSD":
        return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3g}"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1 or value == 0 else f"{value * 1000:.3g} ms"
    if unit == "reqps":
        return f"{value:.3g} req/s"
    if unit == "x":
        return f"{value:.3g}x"
    for size, suffix in ((1e9, " B"), (1e6, " Mil"), (1e3, " K")):  # Grafana's "short"
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


class _Panel:
    """One panel drawn into its rectangle (figure fractions) of ``size`` display pixels."""

    def __init__(self, fig, panel, series, start, rect, size):
        self.fig, self.panel, self.series, self.start = fig, panel, series, start
        self.rect, (self.wpx, self.hpx) = rect, size
        self.defaults = panel["fieldConfig"]["defaults"]
        self.unit = self.defaults.get("unit")

    def _frac(self, px_x=0.0, px_y=0.0):
        """Panel-relative pixel offsets from its top-left corner as figure fractions."""
        fig_w, fig_h = self.fig.get_size_inches() * 72
        return self.rect[0] + px_x / fig_w, self.rect[1] + self.rect[3] - px_y / fig_h

    def _axes(self, px_left, px_top, px_right, px_bottom, **kw):
        x0, y1 = self._frac(px_left, px_top)
        x1, y0 = self._frac(self.wpx - px_right, self.hpx - px_bottom)
        ax = self.fig.add_axes([x0, y0, x1 - x0, y1 - y0], **kw)
        ax.set_facecolor("none")
        return ax

    def draw(self):
        frame = self._axes(0, 0, 0, 0)
        frame.set_xticks([])
        frame.set_yticks([])
        background = _PANEL
        kind = self.panel["type"]
        if kind == "stat" and self.series and self.panel["options"].get("colorMode") == "background":
            background = _threshold_color(self.defaults, self.series[0][1][-1][1])
        frame.set_facecolor(background)
        for spine in frame.spines.values():
            spine.set_color(_BORDER)
        frame.text(8 / self.wpx, 1 - 7 / self.hpx, self.panel["title"], transform=frame.transAxes, fontsize=10.5,
                   fontweight="bold", va="top", color="white" if kind == "stat" else _TEXT)  # fmt: skip
        if not self.series:
            frame.text(0.5, 0.5, "No data", ha="center", va="center", transform=frame.transAxes, color=_DIM)
            return
        getattr(self, f"_{kind}", self._timeseries)()

    # time series: lines, threshold lines, the legend below as Grafana places it
    def _timeseries(self):
        series = self.series
        ncol = max(1, int(self.wpx // 150))
        rows_fit = max(1, int((self.hpx * 0.4) // _LEGEND_ROW))
        shown = series if len(series) <= ncol * rows_fit else series[: ncol * rows_fit - 1]
        legend_rows = math.ceil((len(shown) + (len(shown) < len(series))) / ncol)
        ax = self._axes(52, 26, 10, 24 + _LEGEND_ROW * legend_rows)
        handles = []
        for n, (legend, pts) in enumerate(series):
            (line,) = ax.plot([t - self.start for t, _ in pts], [v for _, v in pts], linewidth=1.1,
                              color=_PALETTE[n % len(_PALETTE)], label=legend)  # fmt: skip
            handles.append(line)
        data_limits = ax.get_ylim()  # threshold lines outside the data stay outside, as in Grafana
        if self.defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") in ("line", "dashed"):
            for step in self.defaults.get("thresholds", {}).get("steps", [])[1:]:
                ax.axhline(step["value"], color=_COLORS.get(step["color"], step["color"]), linestyle="--",
                           linewidth=0.8)  # fmt: skip
        ax.set_ylim(data_limits)
        if "min" in self.defaults:
            ax.set_ylim(bottom=self.defaults["min"])
        if "max" in self.defaults:
            ax.set_ylim(top=self.defaults["max"])
        ax.grid(color=_BORDER, linewidth=0.5)
        ax.tick_params(labelsize=8, length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt(v, self.unit)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f} s"))
        labels = [legend for legend, _ in shown]
        handles = handles[: len(shown)]
        if len(shown) < len(series):
            handles.append(ax.plot([], [], alpha=0)[0])
            labels.append(f"+{len(series) - len(shown)} more")
        x0, y0 = self._frac(8, self.hpx - 4 - _LEGEND_ROW * legend_rows)
        self.fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(x0, y0), ncol=ncol, fontsize=8.5,
                        frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0, borderpad=0,
                        labelspacing=0.3, handletextpad=0.4, labelcolor=_TEXT)  # fmt: skip

    # stat: the last value, big, over a sparkline of the series (graphMode area)
    def _stat(self):
        count = _is_count(self.panel)
        for n, (legend, pts) in enumerate(self.series[:4]):
            if self.panel["options"].get("graphMode") == "area" and len(pts) > 1:
                ax = self._axes(0, self.hpx * 0.62, 0, 0)
                ax.fill_between([t for t, _ in pts], [v for _, v in pts], color="white", alpha=0.18, linewidth=0)
                ax.plot([t for t, _ in pts], [v for _, v in pts], color="white", alpha=0.5, linewidth=1)
                ax.set_ylim(bottom=min(0, min(v for _, v in pts)))
                ax.axis("off")
            text = fmt(pts[-1][1], self.unit, count=count)
            y = 0.55 - n * 0.18
            label = f"{legend}: " if len(self.series) > 1 else ""
            self.fig.text(*self._frac(self.wpx / 2, self.hpx * (1 - y)), label + text, ha="center", va="center",
                          fontsize=20 if len(self.series) == 1 else 12, fontweight="bold", color="white")  # fmt: skip

    # gauge: an arc per series from min to max, coloured by threshold, markers on the rim
    def _gauge(self):
        from matplotlib.patches import Wedge

        lo, hi = self.defaults.get("min", 0), self.defaults.get("max", 1)
        steps = self.defaults.get("thresholds", {}).get("steps", [])
        n = len(self.series)
        inner_w, inner_h = self.wpx - 8, self.hpx - 28
        # the grid of gauges that leaves each the largest round space
        cols = max(range(1, n + 1), key=lambda c: min(inner_w / c, inner_h / math.ceil(n / c) * 1.15))
        rows = math.ceil(n / cols)
        cell_w, cell_h = inner_w / cols, inner_h / rows
        for i, (legend, pts) in enumerate(self.series):
            col, row = i % cols, i // cols
            ax = self._axes(4 + col * cell_w, 24 + row * cell_h, self.wpx - 4 - (col + 1) * cell_w,
                            self.hpx - 4 - (row + 1) * cell_h)  # fmt: skip
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.0, 1.1)
            ax.set_aspect("equal")
            ax.axis("off")
            value = pts[-1][1]
            color = _threshold_color(self.defaults, value)

            def arc(f0, f1, radius, width, color, ax=ax):  # fractions of the range along a 240-degree arc
                ax.add_patch(Wedge((0, 0), radius, 210 - 240 * f1, 210 - 240 * f0, width=width, color=color))

            arc(0, 1, 0.86, 0.24, "#2c3235")
            arc(0, max(0.0, min(1.0, (value - lo) / (hi - lo))), 0.86, 0.24, color)
            for k, step in enumerate(steps):  # showThresholdMarkers: the thresholds on the rim
                s0 = lo if step["value"] is None else step["value"]
                s1 = steps[k + 1]["value"] if k + 1 < len(steps) else hi
                arc((s0 - lo) / (hi - lo), (s1 - lo) / (hi - lo), 1.0, 0.08, _COLORS.get(step["color"], step["color"]))
            ax.text(0, 0.02, fmt(value, self.unit), ha="center", va="center", fontsize=11, fontweight="bold",
                    color=color)  # fmt: skip
            ax.text(0, -0.78, legend, ha="center", va="center", fontsize=7.5, color=_TEXT)

    # bar gauge: one horizontal bar per series, gradient, value at the end
    def _bargauge(self):
        count = _is_count(self.panel)
        series = sorted(self.series, key=lambda s: -s[1][-1][1])
        top = max(s[1][-1][1] for s in series) or 1
        ax = self._axes(8, 26, 8, 6)
        ax.set_xlim(0, 1)
        ax.set_ylim(len(series), 0)
        ax.axis("off")
        import numpy as np
        from matplotlib.patches import Rectangle

        gradient = np.linspace(0, 1, 256).reshape(1, -1)
        for i, (legend, pts) in enumerate(series):
            value = pts[-1][1]
            ax.text(0, i + 0.28, legend, va="center", fontsize=7.5, color=_TEXT)
            ax.add_patch(Rectangle((0, i + 0.45), 0.82, 0.42, color="#22252b"))  # showUnfilled
            ax.imshow(gradient, extent=(0, 0.82 * value / top, i + 0.87, i + 0.45), aspect="auto", zorder=2,
                      cmap=_gradient(_threshold_color(self.defaults, value)))  # fmt: skip
            ax.text(0.99, i + 0.66, fmt(value, self.unit, count=count), ha="right", va="center", fontsize=8.5,
                    fontweight="bold", color=_threshold_color(self.defaults, value))  # fmt: skip

    # pie chart: last values, legend beside
    def _piechart(self):
        ax = self._axes(6, 26, self.wpx * 0.45, 6)
        values = [pts[-1][1] for _, pts in self.series]
        colors = [_PALETTE[n % len(_PALETTE)] for n in range(len(values))]
        ax.pie(values, colors=colors, startangle=90, counterclock=False,
               wedgeprops={"linewidth": 1, "edgecolor": _PANEL})  # fmt: skip
        ax.set_aspect("equal")
        total = sum(values) or 1
        for n, ((legend, _), value) in enumerate(zip(self.series, values)):
            x, y = self._frac(self.wpx * 0.57, 40 + n * 15)
            self.fig.text(x, y, "\u25a0", color=colors[n], fontsize=9, va="center")
            self.fig.text(x + 12 / (self.fig.get_size_inches()[0] * 72), y, f"{legend}  {value / total:.0%}",
                          fontsize=8, va="center", color=_TEXT)  # fmt: skip


def _gradient(color: str):
    from matplotlib.colors import LinearSegmentedColormap, to_rgb

    r, g, b = to_rgb(color)
    return LinearSegmentedColormap.from_list("bar", [(r * 0.35, g * 0.35, b * 0.35), (r, g, b)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.render", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of demo traffic (default 90)")
    parser.add_argument("--rate", type=float, default=8.0, help="agent runs per second (default 8)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(assets.ROOT)})")
    parser.add_argument("--save-results", type=Path, help="also write the query results to this JSON file")
    parser.add_argument("--from-results", type=Path, help="redraw from a --save-results file (no demo run)")
    args = parser.parse_args(argv)
    if args.from_results:
        saved = json.loads(args.from_results.read_text("utf-8"))
        results, start, end = saved["results"], saved["start"], saved["end"]
    else:
        results, start, end = run_workload(args.seconds, args.rate)
    if args.save_results:
        args.save_results.write_text(json.dumps({"results": results, "start": start, "end": end}), "utf-8")
    note = (f"A {end - start:.0f}-second run: windows of 1 h, 30 min and 5 min (cost per hour, burn rates, "
            f"escalation ratio, tokens per run) are shortened to {SHORT_WINDOW} s and day-long ones cover the whole "
            "run; counts are integers.")  # fmt: skip
    empty = draw(results, start + 5, args.out, note=note)
    print(f"wrote {args.out}: {len(results) - len(empty)} of {len(results)} panels with data")
    for title in empty:
        print(f"  no data: {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
