"""The wheel a user installs: every module, the type marker, the licence, the monitoring
assets equal to the repository's, and ``spanmeter demo --prometheus`` run from it outside
the checkout. Builds the wheel with pip (once per module)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "spanmeter"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: an in-tree build would write build/ into the checkout, and setuptools
    # packs stale files it finds there
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=skip)
    for group in ("grafana", "prometheus"):
        shutil.copytree(ROOT / "dashboards" / group, tree / "dashboards" / group, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                            "-w", str(out), str(tree)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("spanmeter-*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as an installer would lay it out in site-packages."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_every_module_and_package_of_the_source_is_in_the_wheel(wheel):
    names = _names(wheel)
    missing = [str(p.relative_to(ROOT / "src")) for p in SRC.rglob("*.py")
               if "__pycache__" not in p.parts and str(p.relative_to(ROOT / "src")) not in names]  # fmt: skip
    assert not missing, f"{missing} not in the wheel: list their packages in pyproject.toml [tool.setuptools] packages"
    assert "spanmeter/py.typed" in names


def test_the_wheel_declares_the_licence_it_ships(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode()
        (licence,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        text = archive.read(licence).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert text == (ROOT / "LICENSE").read_text("utf-8")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    assert f"\nVersion: {version}\n" in metadata


def test_the_shipped_assets_are_the_repositorys_files(site):
    for group, pattern in (("grafana", "*.json"), ("prometheus", "*.yml")):
        repo = {p.name: p.read_bytes() for p in (ROOT / "dashboards" / group).glob(pattern)}
        shipped = {p.name: p.read_bytes() for p in (site / "spanmeter" / "assets" / group).glob(pattern)}
        assert repo and shipped == repo, group


def _env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # the installed package, not the checkout's src/
    return env


def test_the_installed_package_runs_outside_the_checkout(site, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import spanmeter, spanmeter.assets as a; "
                            "print(spanmeter.__file__); print(a.directory('prometheus')); print(spanmeter.__version__)"],
                           cwd=tmp_path, env=_env(site), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    module, prometheus_dir, version = probe.stdout.split()
    assert Path(module).is_relative_to(site) and Path(prometheus_dir).is_relative_to(site)
    assert version != "0+unknown"
    exported = subprocess.run([sys.executable, "-m", "spanmeter", "assets", "export", "ops"], cwd=tmp_path,
                              env=_env(site), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "ops" / "grafana" / "ai-agent-operations.json").is_file()


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus package")
def test_demo_with_prometheus_from_the_installed_package_outside_the_checkout(site, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "spanmeter", "demo", "--port", "0", "--rate", "10", "--duration",
                             "120", "--prometheus"], cwd=tmp_path, env=_env(site), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    try:
        match = None
        deadline = time.monotonic() + 60
        while match is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            assert "skipped" not in line, "".join(lines)
            match = re.search(r"prometheus: (http://127\.0\.0\.1:\d+) \(.*rules from (\S+);", line)
        assert match, "".join(lines)
        url, rules_dir = match.group(1), Path(match.group(2))
        assert rules_dir.is_relative_to(site), rules_dir
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            if groups:
                break
            time.sleep(0.5)
        assert {g["name"] for g in groups} >= {"spanmeter.rates", "spanmeter.slo"}
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
