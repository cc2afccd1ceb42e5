"""Small charts for the Dagster UI: a bar chart as a PNG, which ``defs/markdown.py`` embeds in
Markdown metadata as a data URI (the UI renders Markdown images), with the numbers as a table
beside it. No plotting library: the PNG is drawn and encoded here (zlib and CRCs from the
standard library)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

_WIDTH, _BAR, _GAP, _MARGIN = 360, 12, 4, 4
_BACKGROUND, _BAR_COLOUR, _TRACK = (255, 255, 255), (79, 124, 196), (232, 236, 244)


def bar_chart_png(values: Sequence[float], *, full_scale: float | None = None) -> bytes:
    """A PNG with one horizontal bar per value on a light track; ``full_scale`` is the value of
    a full-width bar (default: the largest value)."""
    scale = full_scale or max(max(values), 1e-9)
    height = 2 * _MARGIN + len(values) * (_BAR + _GAP) - _GAP
    room = _WIDTH - 2 * _MARGIN
    rows = [bytes(_BACKGROUND) * _WIDTH for _ in range(height)]
    for index, value in enumerate(values):
        filled = round(max(0.0, min(1.0, value / scale)) * room)
        line = bytes(_BACKGROUND) * _MARGIN + bytes(_BAR_COLOUR) * filled + bytes(_TRACK) * (room - filled)
        line += bytes(_BACKGROUND) * _MARGIN
        top = _MARGIN + index * (_BAR + _GAP)
        rows[top : top + _BAR] = [line] * _BAR
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every scanline
    header = struct.pack(">IIBBBBB", _WIDTH, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def format_value(value: float, percent: bool) -> str:
    """A bar's number as its table shows it."""
    return f"{value:.0%}" if percent else f"{value:g}"
