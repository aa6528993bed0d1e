"""The ``spanmeter`` command as a shell user meets it: --version, pipes, ``assets export``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from spanmeter import assets
from spanmeter.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    import spanmeter

    assert capsys.readouterr().out.strip() == f"spanmeter {spanmeter.__version__}"
    try:
        assert spanmeter.__version__ == metadata.version("spanmeter")
    except metadata.PackageNotFoundError:
        assert spanmeter.__version__ == "0+unknown"


def _closed_stdout(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``spanmeter ARGS`` with its stdout pipe closed before it writes (``| head`` that already quit)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "spanmeter", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    proc.stdout.close()
    _, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err), time.monotonic() - started


def test_catalog_into_a_closed_pipe_ends_without_a_traceback():
    done, _ = _closed_stdout("catalog")
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1


def test_demo_into_a_closed_pipe_stops_promptly_and_cleanly():
    done, elapsed = _closed_stdout("demo", "--port", "0", "--duration", "60")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0
    assert elapsed < 30  # it stopped as Ctrl-C would, not after its 60 s


def test_assets_export_writes_every_shipped_file(tmp_path, capsys):
    assert main(["assets", "export", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.split()
    expected = {tmp_path / group / f.name: f for group in assets.GROUPS for f in assets.files(group)}
    assert {Path(p) for p in listed} == set(expected)
    assert {p.name for p in expected} >= {"ai-agent-operations.json", "prometheus.yml", "recording.rules.yml",
                                          "alerts.rules.yml"}  # fmt: skip
    for target, source in expected.items():
        assert target.read_bytes() == source.read_bytes()
    assert main(["assets", "export", str(tmp_path)]) == 0  # identical files: nothing to refuse


def test_assets_export_refuses_to_overwrite_a_changed_file_without_force(tmp_path, capsys):
    assert main(["assets", "export", str(tmp_path)]) == 0
    edited = tmp_path / "prometheus" / "prometheus.yml"
    edited.write_text("# my own scrape config\n", "utf-8")
    assert main(["assets", "export", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert edited.read_text("utf-8") == "# my own scrape config\n"
    assert main(["assets", "export", str(tmp_path), "--force"]) == 0
    assert edited.read_bytes() == (assets.directory("prometheus") / "prometheus.yml").read_bytes()


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs Debian's prometheus package")
def test_exported_rules_and_config_work_with_promtool_as_they_are(tmp_path):
    assert main(["assets", "export", str(tmp_path)]) == 0
    prom = tmp_path / "prometheus"
    for command in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(["promtool", *command], cwd=prom, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
