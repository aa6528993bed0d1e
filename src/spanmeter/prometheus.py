"""Run a real Prometheus on loopback with spanmeter's scrape config and rules.

Used by ``spanmeter demo --prometheus``, the end-to-end tests and the panel renderer.
The committed files (``dashboards/prometheus/``: ``prometheus.yml`` and the rule files)
are copied to a temporary directory; the copy of ``prometheus.yml`` gets the real
target and, for tests, shorter intervals. Prometheus listens on 127.0.0.1 on a free
port and keeps its storage in the temporary directory, removed by :meth:`stop`.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_TARGET = "127.0.0.1:9464"  # the target written in the committed prometheus.yml


class PrometheusError(RuntimeError):
    """Prometheus could not be started or answered with an error."""


def find_assets(start: Path | None = None) -> Path | None:
    """The ``dashboards/prometheus`` directory of a source checkout, or None.

    Looks under ``start`` (default: the working directory), then next to the package
    source (an editable install).
    """
    here = Path(__file__).resolve()
    for base in (start or Path.cwd(), here.parents[2]):
        candidate = base / "dashboards" / "prometheus"
        if (candidate / "prometheus.yml").is_file():
            return candidate
    return None


def _substitute(text: str, pattern: str, replacement: str, what: str) -> str:
    new, count = re.subn(pattern, replacement, text)
    if count < 1:
        raise PrometheusError(f"prometheus.yml has no {what} to replace (pattern {pattern!r})")
    return new


def local_config(text: str, *, target: str, scrape_interval: str | None = None,
                 evaluation_interval: str | None = None) -> str:  # fmt: skip
    """``prometheus.yml`` text with its target (and intervals, when given) replaced."""
    text = _substitute(text, re.escape(f'"{DEFAULT_TARGET}"'), json.dumps(target), "default target")
    if scrape_interval:
        text = _substitute(text, r"(?m)^(\s*scrape_interval:\s*)\S+", rf"\g<1>{scrape_interval}", "scrape_interval")
    if evaluation_interval:
        text = _substitute(text, r"(?m)^(\s*evaluation_interval:\s*)\S+", rf"\g<1>{evaluation_interval}",
                           "evaluation_interval")  # fmt: skip
    return text


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalPrometheus:
    """A Prometheus process on 127.0.0.1 scraping ``target`` with the rules of ``assets``.

    ``flags``: more command-line flags, e.g. ``("--enable-feature=exemplar-storage",)``.
    """

    def __init__(self, assets: Path, target: str, *, scrape_interval: str | None = None,
                 evaluation_interval: str | None = None, binary: str = "prometheus", rule_files=None,
                 flags: tuple[str, ...] = ()):  # fmt: skip
        self.assets = Path(assets)
        self.target = target
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.binary = binary
        self.rule_files = rule_files  # None: every *.rules.yml of assets
        self.flags = tuple(flags)
        self.port: int | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        binary = shutil.which(self.binary)
        if binary is None:
            raise PrometheusError(f"no `{self.binary}` binary on PATH (Debian: apt-get install prometheus)")
        self.workdir = Path(tempfile.mkdtemp(prefix="spanmeter-prometheus-"))
        rule_files = self.rule_files or sorted(self.assets.glob("*.rules.yml"))
        for path in rule_files:
            shutil.copy(path, self.workdir / Path(path).name)
        config = local_config((self.assets / "prometheus.yml").read_text("utf-8"), target=self.target,
                              scrape_interval=self.scrape_interval, evaluation_interval=self.evaluation_interval)
        (self.workdir / "prometheus.yml").write_text(config, "utf-8")
        self.port = free_port()
        self._log = open(self.workdir / "prometheus.log", "w+b")
        self._proc = subprocess.Popen(
            [binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1d", "--log.level=warn", *self.flags],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus was not ready in {timeout:g}s")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def api(self, path: str, **params) -> dict:
        """GET ``/api/v1/<path>``; returns ``data``; raises PrometheusError on an error answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query: the result vector (or a one-element list for a scalar)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        result = data["result"]
        return [{"metric": {}, "value": result}] if data["resultType"] == "scalar" else result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")["result"]

    def stop(self) -> None:
        """Stop the process and remove its directory. Safe to call twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
