"""Redraw docs/top.png, top-models.png and top.txt: `spanmeter top` against `spanmeter demo` in a pty.

    python docs/top_screenshot.py  [--seconds 70]

Needs the test extra (rich, pexpect, pyte) and cairosvg. The demo and top run as
subprocesses; top draws into a pseudo-terminal whose screen the pyte VT emulator keeps,
with colours; that screen is written as text and, through rich's SVG export and
cairosvg, as a PNG.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cairosvg
import pexpect
import pyte
from rich.console import Console
from rich.style import Style
from rich.text import Text

HERE = Path(__file__).parent
ROWS, COLS = 24, 132
PYTE_COLOURS = {"brown": "yellow"}  # pyte names ANSI yellow after the VT100's brown


def _colour(name: str) -> str | None:
    if name == "default":
        return None
    if re.fullmatch(r"[0-9a-fA-F]{6}", name):
        return "#" + name
    return PYTE_COLOURS.get(name, name)


def screen_text(screen: pyte.Screen) -> Text:
    """The emulator's screen as rich Text, colours and bold kept, trailing blank lines dropped."""
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    out = Text()
    for y in range(len(lines)):
        row = screen.buffer[y]
        for x in range(len(lines[y])):
            ch = row[x]
            out.append(ch.data, Style(color=_colour(ch.fg), bgcolor=_colour(ch.bg), bold=ch.bold, reverse=ch.reverse))
        out.append("\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=70.0, help="how long top runs before the capture")
    args = parser.parse_args()
    demo = subprocess.Popen([sys.executable, "-m", "spanmeter", "demo", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = next(m.group(1) for line in demo.stdout if (m := re.search(r"metrics : (http://\S+)", line)))
        threading.Thread(target=demo.stdout.read, daemon=True).start()
        screen = pyte.Screen(COLS, ROWS)
        stream = pyte.ByteStream(screen)
        top = pexpect.spawn(sys.executable, ["-m", "spanmeter", "top", url], dimensions=(ROWS, COLS),
                            env={**os.environ, "TERM": "xterm-256color"})  # fmt: skip
        end = time.monotonic() + args.seconds

        def pump(until: float) -> None:
            while time.monotonic() < until:
                try:
                    stream.feed(top.read_nonblocking(65536, timeout=0.2))
                except pexpect.TIMEOUT:
                    pass

        pump(end)
        shots = {"top": screen_text(screen)}
        top.send("2")  # the models view
        pump(time.monotonic() + 1.0)
        shots["top-models"] = screen_text(screen)
        top.send("q")
        top.expect(pexpect.EOF, timeout=5)
    finally:
        demo.kill()
        demo.wait()
    default = "http://127.0.0.1:9464/metrics"  # the demo's port is random: show the default endpoint
    texts = []
    for name, text in shots.items():
        text = _replace(text, url, default)
        texts.append(text.plain)
        console = Console(record=True, width=COLS, file=open(os.devnull, "w"), color_system="truecolor")
        console.print(text, end="")
        svg = console.export_svg(title="spanmeter top").replace("Fira Code", "DejaVu Sans Mono")
        cairosvg.svg2png(bytestring=svg.encode(), write_to=str(HERE / f"{name}.png"))
    (HERE / "top.txt").write_text("\n".join(texts), encoding="utf-8")
    print(f"wrote {HERE / 'top.txt'}, {HERE / 'top.png'} and {HERE / 'top-models.png'}")
    return 0


def _replace(text: Text, old: str, new: str) -> Text:
    """``text`` with ``old`` replaced by ``new`` (same style as the first replaced character)."""
    plain = text.plain
    start = plain.find(old)
    if start < 0:
        return text
    out = text[:start]
    out.append(new, text.get_style_at_offset(Console(), start))
    out.append_text(text[start + len(old) :])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
