"""``spanmeter top``: the agent dashboard in a terminal, live.

Reads a ``/metrics`` endpoint (or a Prometheus server's query API), computes rates
between consecutive readings with :mod:`spanmeter.topdata`, and draws them with ``rich``
(the ``top`` extra). ``--once`` and ``--json`` print and exit, without ``rich``.
"""

from __future__ import annotations

import json
import math
import os
import select
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from spanmeter import topdata
from spanmeter.topdata import Scrape

DEFAULT_URL = "http://127.0.0.1:9464/metrics"
VIEW_ORDER = ("agents", "models", "tools", "quality")
SPARK_WIDTH = 24


class SourceError(Exception):
    """The endpoint could not be read; ``unreachable`` is False when it answered, but wrongly."""

    def __init__(self, message: str, *, unreachable: bool):
        super().__init__(message)
        self.unreachable = unreachable


def _get(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()  # Prometheus says why in the body
        raise SourceError(f"HTTP {exc.code} from {url}" + (f": {detail}" if detail else ""), unreachable=False) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"{url}: {reason}", unreachable=True) from exc


class Endpoint:
    """A ``/metrics`` endpoint scraped directly; top keeps the history of its readings."""

    def __init__(self, url: str, *, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout

    def read(self, history: list[Scrape], keep: float) -> list[Scrape]:
        """``history`` plus a fresh scrape, without readings older than ``keep`` seconds."""
        now = time.time()
        body = _get(self.url, self.timeout)
        try:
            scrape = topdata.parse(body.decode("utf-8", "replace"), now)
        except ValueError as exc:
            raise SourceError(f"{self.url} did not answer a Prometheus exposition: {exc}", unreachable=False) from exc
        return [s for s in history if s.time >= now - keep] + [scrape]


class PrometheusAPI:
    """A Prometheus server: each read asks for the raw samples of the last ``keep`` seconds.

    Prometheus keeps the history, so the figures are between its own consecutive scrapes
    (like ``irate``) and the first read already has them.
    """

    def __init__(self, url: str, *, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def read(self, history: list[Scrape], keep: float) -> list[Scrape]:
        selector = '{__name__=~"' + "|".join(sorted(topdata.SAMPLE_NAMES)) + '"}' + f"[{max(1, int(keep))}s]"
        query = urllib.parse.urlencode({"query": selector})
        body = _get(f"{self.url}/api/v1/query?{query}", self.timeout)
        try:
            answer = json.loads(body)
            if answer.get("status") != "success":
                raise ValueError(f"{answer.get('errorType')}: {answer.get('error')}")
            series = answer["data"]["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{self.url}: unexpected answer to the query API: {exc}", unreachable=False) from exc
        # no series at all is an answer too: one empty reading says "no data yet" honestly
        return scrapes_from_matrix(series) or [Scrape(time.time())]


def scrapes_from_matrix(series: list[dict]) -> list[Scrape]:
    """Readings rebuilt from a Prometheus range-vector answer, oldest first.

    The k-th reading holds the k-th newest sample of every series (Prometheus' own scrape
    times), so consecutive readings are consecutive scrapes even across several targets.
    """
    depth = max((len(s["values"]) for s in series), default=0)
    out: list[Scrape] = []
    for k in range(depth, 0, -1):
        samples: dict = {}
        for s in series:
            if len(s["values"]) >= k:
                labels = dict(s["metric"])
                name = labels.pop("__name__", "")
                ts, value = s["values"][-k]
                samples[(name, tuple(sorted(labels.items())))] = (float(ts), float(value))
        out.append(Scrape(max(ts for ts, _ in samples.values()), samples))
    return out


def interval_of(prev: Scrape, cur: Scrape) -> float:
    """Seconds between two readings, from the samples' own timestamps."""
    return topdata.reading_time(cur) - topdata.reading_time(prev)


# --- the state of the live view -------------------------------------------------------------


@dataclass
class State:
    """What the live view shows: readings, connection state and the user's choices."""

    url: str
    interval: float
    keep: float
    view: str = "agents"
    sort: dict = field(default_factory=lambda: dict(topdata.DEFAULT_SORT))
    reverse: bool = False
    filter: str = ""
    editing: bool = False  # typing a filter
    history: list = field(default_factory=list)
    error: SourceError | None = None
    last_ok: float | None = None
    _cache: dict = field(default_factory=dict)

    def figures(self, prev: Scrape, cur: Scrape) -> dict:
        key = (prev.time, cur.time)
        if key not in self._cache:
            self._cache[key] = topdata.compute(prev, cur)
        return self._cache[key]

    def refresh(self, source) -> None:
        try:
            self.history = source.read(self.history, self.keep)
            self.error, self.last_ok = None, time.time()
        except SourceError as exc:
            self.error = exc
        live = {(p.time, c.time) for p, c in zip(self.history, self.history[1:])}
        self._cache = {k: v for k, v in self._cache.items() if k in live}

    def rows(self) -> list[dict]:
        """The current view's rows, filtered and sorted (empty before two readings)."""
        if len(self.history) < 2:
            return []
        rows = self.figures(self.history[-2], self.history[-1])[self.view]
        rows = topdata.filter_rows(rows, self.view, self.filter)
        return topdata.sort_rows(rows, self.sort[self.view], self.reverse)

    def trend(self) -> tuple[dict[str, list], float]:
        """Per row name, the view's trend figure over the kept history; and the seconds covered."""
        hist = self.history
        if len(hist) < 2:
            return {}, 0.0
        stride = max(1, math.ceil((len(hist) - 1) / SPARK_WIDTH))
        points = hist[len(hist) - 1 :: -stride][::-1]  # newest always included
        out: dict[str, list] = {}
        key = topdata.TREND[self.view]
        for i, (p, c) in enumerate(zip(points, points[1:])):
            for row in self.figures(p, c)[self.view]:
                out.setdefault(_row_name(self.view, row), [None] * (len(points) - 1))[i] = row.get(key)
        return out, points[-1].time - points[0].time

    def key(self, ch: str) -> bool:
        """Apply one key press; False to quit."""
        if self.editing:
            if ch in ("\r", "\n"):
                self.editing = False
            elif ch == "\x1b":
                self.editing, self.filter = False, ""
            elif ch in ("\x7f", "\b"):
                self.filter = self.filter[:-1]
            elif ch.isprintable():
                self.filter += ch
            return True
        if ch in ("q", "Q", "\x03"):
            return False
        if ch in ("1", "2", "3", "4"):
            self.view = VIEW_ORDER[int(ch) - 1]
        elif ch == "\t":
            self.view = VIEW_ORDER[(VIEW_ORDER.index(self.view) + 1) % len(VIEW_ORDER)]
        elif ch == "s":
            cols = [c.key for c in topdata.columns(self.view, self.rows())]
            current = self.sort[self.view]
            self.sort[self.view] = cols[(cols.index(current) + 1) % len(cols)] if current in cols else cols[0]
            self.reverse = False
        elif ch == "r":
            self.reverse = not self.reverse
        elif ch == "/":
            self.editing, self.filter = True, ""
        return True


def _row_name(view: str, row: dict) -> str:
    return " ".join(str(row[c.key]) for c in topdata.VIEWS[view] if c.kind == "name")


def status_line(state: State, now: float) -> tuple[str, str]:
    """(style, text) of the honest state line: connecting, unreachable, no data yet, or live."""
    if state.error is not None:
        since = f"; last reading {now - state.last_ok:.0f}s ago" if state.last_ok else ""
        if state.error.unreachable:
            return "bold red", f"endpoint unreachable: retrying every {state.interval:g}s ({state.error}){since}"
        return "bold red", f"endpoint error: retrying every {state.interval:g}s ({state.error}){since}"
    if not state.history:
        return "yellow", f"connecting to {state.url} ..."
    if not state.history[-1].samples:
        return "yellow", "no data yet: the endpoint has none of spanmeter's agent metrics"
    if len(state.history) < 2:
        return "yellow", f"no data yet: rates need two readings (next in {state.interval:g}s)"
    dt = interval_of(state.history[-2], state.history[-1])
    newest = topdata.reading_time(state.history[-1])
    stamp = time.strftime("%H:%M:%S", time.localtime(newest))
    if now - newest > max(3 * state.interval, 30.0):  # e.g. Prometheus answers, but its target is down
        return "yellow", f"stale: the newest sample is from {stamp} ({now - newest:.0f}s ago); rates over {dt:.1f}s"
    return "green", f"live: rates over the last {dt:.1f}s, as of {stamp}"


# --- drawing (rich) ------------------------------------------------------------------------


def render(state: State, now: float, screen_width: int = 120):
    """The whole screen as a rich renderable, for a terminal ``screen_width`` columns wide."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text.assemble(("spanmeter top", "bold"), f"  {state.url}  every {state.interval:g}s")
    style, text = status_line(state, now)
    tabs = Text()
    for i, v in enumerate(VIEW_ORDER, 1):
        tabs.append(f" {i} {v} ", style="reverse bold" if v == state.view else "")
        tabs.append(" ")
    rows = state.rows()
    cols = topdata.columns(state.view, rows)
    trends, covered = state.trend()
    sort_key = state.sort[state.view]
    headers = [c.title + ((" ▲" if state.reverse else " ▼") if c.key == sort_key else "") for c in cols]
    body = [[topdata.format_value(c.kind, row.get(c.key)) for c in cols] for row in rows]
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(headers)]
    shown, spark, hidden = fit_columns(cols, widths, screen_width)
    drawn = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, expand=False)
    for i in range(shown):
        name = cols[i].kind == "name"
        drawn.add_column(headers[i], justify="left" if name else "right", style="bold" if name else None,
                         no_wrap=True, width=widths[i])  # fmt: skip
    if spark:
        trend_title = next(c.title for c in topdata.VIEWS[state.view] if c.key == topdata.TREND[state.view])
        drawn.add_column(f"{trend_title}, {_duration(covered)}", no_wrap=True, style="cyan", width=spark)
    for row, cells in zip(rows, body):
        trend = [topdata.sparkline(trends.get(_row_name(state.view, row), []), spark)] if spark else []
        drawn.add_row(*cells[:shown], *trend)
    parts: list = [title, Text(text, style=style), tabs, Text("")]
    if len(state.history) >= 2:
        parts += [drawn, Text("")]
    if len(state.history) >= 2 and not rows:
        parts.append(Text("no rows match the filter" if state.filter else "no data yet in this view", style="yellow"))
    if state.editing:
        parts.append(Text(f"filter: {state.filter}█", style="bold"))
    else:
        filtered = f"  filter: {state.filter!r}" if state.filter else ""
        more = f"  (+{hidden} columns: wider terminal)" if hidden and len(state.history) >= 2 else ""
        parts.append(Text(f"1-4/Tab view  s sort  r reverse  / filter  q quit{filtered}{more}", style="dim"))
    return Group(*parts)


GAP = 2  # between columns: one space of padding, one of the (blank) separator
NAME_MIN = 8


def fit_columns(cols, widths: list[int], screen_width: int) -> tuple[int, int, int]:
    """How many columns fit, the sparkline width (0: none) and how many columns are hidden.

    Figures are never cut: long names shrink (to NAME_MIN, with an ellipsis) first, then the
    sparkline goes, then the rightmost figure columns. ``widths`` may be narrowed in place.
    """
    total = sum(widths) + GAP * (len(widths) - 1)
    for i, c in enumerate(cols):
        if total > screen_width and c.kind == "name" and widths[i] > NAME_MIN:
            cut = min(widths[i] - NAME_MIN, total - screen_width)
            widths[i] -= cut
            total -= cut
    shown = len(cols)
    while total > screen_width and shown > 1:
        shown -= 1
        total -= widths[shown] + GAP
    spark = min(SPARK_WIDTH, screen_width - total - GAP - 1)
    return shown, (spark if spark >= 8 else 0), len(cols) - shown


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f}m" if seconds >= 120 else f"{seconds:.0f}s"


class _Keys:
    """Single key presses from a POSIX terminal (cbreak mode, restored on exit)."""

    def __init__(self, stream):
        self.stream = stream
        self.fd = stream.fileno()
        self._saved = None

    def __enter__(self):
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)  # type: ignore[arg-type]

    def read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        data = os.read(self.fd, 32).decode("utf-8", "replace")
        return data or None


def run_live(source, state: State) -> int:
    """The live view until q or Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with _Keys(sys.stdin) as keys, Live(console=console, screen=True, auto_refresh=False) as live:
        next_read = time.monotonic()
        while True:
            if time.monotonic() >= next_read:
                state.refresh(source)
                next_read = time.monotonic() + state.interval
                live.update(render(state, time.time(), console.width), refresh=True)
            pressed = keys.read(next_read - time.monotonic())
            if pressed:
                for ch in pressed:
                    if not state.key(ch):
                        return 0
                live.update(render(state, time.time(), console.width), refresh=True)


# --- --once and --json ----------------------------------------------------------------------


def read_pair(source, interval: float, keep: float) -> list[Scrape]:
    """Two readings to compute rates from: for an endpoint, two scrapes ``interval`` apart."""
    history = source.read([], keep)
    if isinstance(source, Endpoint):
        time.sleep(interval)
        history = source.read(history, keep + interval)
    return history


def once_text(url: str, history: list[Scrape], views) -> str:
    """The plain-text tables of ``views`` for the last two readings of ``history``."""
    if len(history) < 2:  # a Prometheus that scraped once
        return f"no data yet: {url} gave fewer than two readings\n"
    prev, cur = history[-2], history[-1]
    figures = topdata.compute(prev, cur)
    out = [f"spanmeter top {url}: rates over {interval_of(prev, cur):.1f}s between two readings"]
    for view in views:
        rows = topdata.sort_rows(figures[view], topdata.DEFAULT_SORT[view])
        out += ["", f"[{view}]", topdata.plain_table(view, rows) if rows else "no data yet"]
    return "\n".join(out) + "\n"


def once_json(url: str, history: list[Scrape], views) -> str:
    """The figures of ``views`` as JSON (null where a figure is undefined)."""
    doc: dict = {"source": url, "interval_s": None, "views": {v: [] for v in views}}
    if len(history) >= 2:
        prev, cur = history[-2], history[-1]
        figures = topdata.compute(prev, cur)
        doc["interval_s"] = round(interval_of(prev, cur), 6)
        doc["views"] = {v: [_json_row(r) for r in topdata.sort_rows(figures[v], topdata.DEFAULT_SORT[v])]
                        for v in views}  # fmt: skip
    return json.dumps(doc, indent=2) + "\n"


def _json_row(row: dict) -> dict:
    """A row for --json: the quality view's ``score:<type>`` figures grouped under ``scores``."""
    out = {k: v for k, v in row.items() if not k.startswith("score:")}
    if len(out) < len(row):
        out["scores"] = {k[len("score:"):]: v for k, v in row.items() if k.startswith("score:")}
    return out


def main(args) -> int:
    """Entry of ``spanmeter top`` (arguments parsed by :mod:`spanmeter.cli`)."""
    prometheus = args.prometheus
    url = prometheus or args.url or DEFAULT_URL
    interval = args.interval if args.interval is not None else (15.0 if prometheus else 2.0)
    if interval <= 0:
        print("spanmeter top: --interval must be > 0", file=sys.stderr)
        return 2
    if args.history <= 0:
        print("spanmeter top: --history must be > 0", file=sys.stderr)
        return 2
    keep = max(args.history * 60.0, 3 * interval)  # at least the two readings rates need
    source = PrometheusAPI(url) if prometheus else Endpoint(url, timeout=min(5.0, max(1.0, interval)))
    if args.once or args.json:
        views = [args.view] if args.view else list(VIEW_ORDER)
        try:
            history = read_pair(source, interval, keep)
        except SourceError as exc:
            print(f"spanmeter top: {'endpoint unreachable' if exc.unreachable else 'endpoint error'}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        sys.stdout.write((once_json if args.json else once_text)(url, history, views))
        return 0
    try:
        import rich  # noqa: F401
    except ImportError:
        print("spanmeter top: the live view needs rich: pip install 'spanmeter[top]' "
              "(--once and --json work without it)", file=sys.stderr)  # fmt: skip
        return 2
    if os.name != "posix":  # keys are read with termios
        print("spanmeter top: the live view needs a POSIX terminal (Linux, macOS, WSL); use --once or --json",
              file=sys.stderr)  # fmt: skip
        return 2
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        print("spanmeter top: the live view needs a terminal; use --once or --json in scripts", file=sys.stderr)
        return 2
    state = State(url=url, interval=interval, keep=keep, view=args.view or "agents")
    try:
        return run_live(source, state)
    except KeyboardInterrupt:
        return 0
