"""Redraw docs/top.png, top-models.png and top.txt: `spanmeter top` against `spanmeter demo` in a pty.

    python docs/top_screenshot.py  [--seconds 70]

Needs the test extra (rich, pexpect, pyte) and Pillow (with matplotlib, whose DejaVu Sans
Mono it draws with). The demo and top run as subprocesses; top draws into a pseudo-terminal
whose screen the pyte VT emulator keeps, with colours; that screen is written as text and
painted cell by cell into a PNG (block elements as exact rectangles).
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

import pexpect
import pyte
import matplotlib
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent
ROWS, COLS = 24, 132
PYTE_COLOURS = {"brown": "yellow"}  # pyte names ANSI yellow after the VT100's brown


PALETTE = {"black": "#1d1f21", "red": "#e06c75", "green": "#98c379", "brown": "#e5c07b", "blue": "#61afef",
           "magenta": "#c678dd", "cyan": "#56b6c2", "white": "#dcdfe4"}  # fmt: skip
FG, BG = "#d7dae0", "#1d1f21"
BLOCKS = "▁▂▃▄▅▆▇█"


def _colour(name: str, default: str) -> str:
    if name == "default":
        return default
    if re.fullmatch(r"[0-9a-fA-F]{6}", name):
        return "#" + name
    return PALETTE.get(name, default)


def screen_lines(screen: pyte.Screen) -> list[str]:
    """The screen's text, trailing blanks and blank lines dropped."""
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def paint(screen: pyte.Screen, lines: list[str], path: Path, size: int = 16) -> None:
    """The screen as a PNG: one cell per character, colours, bold and reverse as the terminal had them."""
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    regular = ImageFont.truetype(str(fonts / "DejaVuSansMono.ttf"), size)
    bold = ImageFont.truetype(str(fonts / "DejaVuSansMono-Bold.ttf"), size)
    cw, ch_h, pad = round(regular.getlength("M")), round(size * 1.4), 14
    cols = max(len(line) for line in lines)
    image = Image.new("RGB", (cols * cw + 2 * pad, len(lines) * ch_h + 2 * pad), BG)
    draw = ImageDraw.Draw(image)
    for y, line in enumerate(lines):
        for x in range(len(line)):
            cell = screen.buffer[y][x]
            fg, bg = _colour(cell.fg, FG), _colour(cell.bg, BG)
            if cell.reverse:
                fg, bg = bg, fg
            left, top = pad + x * cw, pad + y * ch_h
            if bg != BG:
                draw.rectangle([left, top, left + cw - 1, top + ch_h - 1], fill=bg)
            if cell.data in BLOCKS:  # exact eighths, bottom-aligned, as a terminal draws them
                height = round(ch_h * (BLOCKS.index(cell.data) + 1) / 8)
                draw.rectangle([left, top + ch_h - height, left + cw - 1, top + ch_h - 1], fill=fg)
            elif cell.data == "─":
                draw.rectangle([left, top + ch_h // 2, left + cw - 1, top + ch_h // 2], fill=fg)
            elif cell.data.strip():
                draw.text((left, top + (ch_h - size) // 2 - 1), cell.data, font=bold if cell.bold else regular, fill=fg)
    image.save(path)


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
        shots = {"top": ([*screen_lines(screen)], _copy(screen))}
        top.send("2")  # the models view
        pump(time.monotonic() + 1.0)
        shots["top-models"] = ([*screen_lines(screen)], _copy(screen))
        top.send("q")
        top.expect(pexpect.EOF, timeout=5)
    finally:
        demo.kill()
        demo.wait()
    default = "http://127.0.0.1:9464/metrics"  # the demo's port is random: show the default endpoint
    texts = []
    for name, (lines, snap) in shots.items():
        lines = [line.replace(url, default.ljust(len(url))).rstrip() for line in lines]
        for y, line in enumerate(lines):  # the same replacement in the cells
            for x, ch in enumerate(line):
                snap.buffer[y][x] = snap.buffer[y][x]._replace(data=ch)
        texts.append("\n".join(lines))
        paint(snap, lines, HERE / f"{name}.png")
    (HERE / "top.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'top.txt'}, {HERE / 'top.png'} and {HERE / 'top-models.png'}")
    return 0


def _copy(screen: pyte.Screen) -> pyte.Screen:
    """A snapshot of the screen's cells (the live one keeps changing)."""
    snap = pyte.Screen(screen.columns, screen.lines)
    for y in range(screen.lines):
        for x in range(screen.columns):
            snap.buffer[y][x] = screen.buffer[y][x]
    return snap


if __name__ == "__main__":
    raise SystemExit(main())
