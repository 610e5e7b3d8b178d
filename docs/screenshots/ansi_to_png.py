#!/usr/bin/env python3
"""Renders a terminal capture (`tmux capture-pane -e -p`) to a PNG with ImageMagick.

How the screenshots in this folder were made (see README, "natter tui"):

    tmux capture-pane -e -p -t SESSION > shot.ansi
    python3 docs/screenshots/ansi_to_png.py shot.ansi shot.png

It understands what ratatui writes: SGR reset, bold, reverse, 8/16/256-colour foregrounds and
backgrounds. Each run of cells with one style becomes a rectangle and a text in an ImageMagick
draw file; ImageMagick draws it with DejaVu Sans Mono.
"""

import re
import subprocess
import sys
import tempfile

CELL_W, CELL_H, FONT_SIZE = 9, 18, 15
DEFAULT_FG, DEFAULT_BG = "#d0d0d0", "#1c1c1c"
BASE16 = ["#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
          "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff"]


def colour256(n):
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (steps[n // 36], steps[n // 6 % 6], steps[n % 6])
    grey = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (grey, grey, grey)


def parse(line):
    """Yields (char, fg, bg, bold) for each cell of one captured line."""
    fg, bg, bold, reverse = None, None, False, False
    for token in re.split(r"(\x1b\[[0-9;]*m)", line):
        if token.startswith("\x1b["):
            codes = [int(c) if c else 0 for c in token[2:-1].split(";")]
            i = 0
            while i < len(codes):
                c = codes[i]
                if c == 0:
                    fg, bg, bold, reverse = None, None, False, False
                elif c == 1:
                    bold = True
                elif c == 22:
                    bold = False
                elif c == 7:
                    reverse = True
                elif c == 27:
                    reverse = False
                elif 30 <= c <= 37:
                    fg = BASE16[c - 30]
                elif 90 <= c <= 97:
                    fg = BASE16[c - 90 + 8]
                elif 40 <= c <= 47:
                    bg = BASE16[c - 40]
                elif 100 <= c <= 107:
                    bg = BASE16[c - 100 + 8]
                elif c in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
                    if c == 38:
                        fg = colour256(codes[i + 2])
                    else:
                        bg = colour256(codes[i + 2])
                    i += 2
                elif c == 39:
                    fg = None
                elif c == 49:
                    bg = None
                i += 1
            continue
        for ch in token:
            f, b = fg or DEFAULT_FG, bg or DEFAULT_BG
            if reverse:
                f, b = b, f
            yield ch, f, b, bold


def escape(text):
    return text.replace("\\", "\\\\").replace("'", "\\'")


def main(src, dst):
    with open(src, encoding="utf-8") as f:
        lines = f.read().rstrip("\n").split("\n")
    width = max(sum(1 for _ in parse(l)) for l in lines)
    draw = []
    for row, line in enumerate(lines):
        cells = list(parse(line))
        col = 0
        while col < len(cells):
            _, f, b, bold = cells[col]
            end = col
            while end < len(cells) and cells[end][1:] == (f, b, bold):
                end += 1
            x, y = col * CELL_W, row * CELL_H
            if b != DEFAULT_BG:
                draw.append("fill '%s' rectangle %d,%d %d,%d" % (b, x, y, end * CELL_W - 1, y + CELL_H - 1))
            for i in range(col, end):
                ch = cells[i][0]
                if ch == " ":
                    continue
                font = "DejaVu-Sans-Mono-Bold" if bold else "DejaVu-Sans-Mono"
                draw.append("font '%s' fill '%s' text %d,%d '%s'" % (
                    font, f, i * CELL_W, y + CELL_H - 5, escape(ch)))
            col = end
    w, h = width * CELL_W, len(lines) * CELL_H
    with tempfile.NamedTemporaryFile("w", suffix=".mvg", delete=False, encoding="utf-8") as mvg:
        mvg.write("viewbox 0 0 %d %d\n" % (w, h))
        mvg.write("fill '%s' rectangle 0,0 %d,%d\n" % (DEFAULT_BG, w, h))
        mvg.write("font-size %d\n" % FONT_SIZE)
        mvg.write("\n".join(draw))
    subprocess.run(["convert", "mvg:" + mvg.name, dst], check=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
