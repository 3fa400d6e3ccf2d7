"""Text heatmaps: one unit's activation as the background colour of every character.

Karpathy, Johnson & Fei-Fei 2015, Figs. 2 and 4: a cell's value after reading each character,
drawn over the text. Pure HTML with inline styles, so JupyterLab shows it inline and it survives
export to static HTML; long texts wrap by line like source code, with line numbers.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import EmptyInputError

__all__ = ["COLORMAPS", "TextHeatmap", "color_of", "heatmap_grid", "text_heatmap"]

# Colour maps as (position in [0, 1], RGB) stops, linearly interpolated.
COLORMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    # blue (negative) -> white (0) -> red (positive): the paper's tanh(c) and h plots
    "diverging": [(0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43))],
    # white (0) -> green (1): gates in [0, 1]
    "sequential": [(0.0, (247, 252, 245)), (1.0, (0, 109, 44))],
}

_NEWLINE_MARK = "↵"
_TAB_WIDTH = 4


def color_of(fraction: float, cmap: str = "diverging") -> str:
    """CSS `rgb(...)` at `fraction` in [0, 1] of a colour map (values outside are clipped)."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    stops = COLORMAPS[cmap]
    x = float(np.clip(fraction, 0.0, 1.0)) if np.isfinite(fraction) else 0.5
    for (x0, c0), (x1, c1) in zip(stops, stops[1:], strict=False):
        if x <= x1:
            w = (x - x0) / (x1 - x0)
            r, g, b = (round(a + w * (bb - a)) for a, bb in zip(c0, c1, strict=True))
            return f"rgb({r},{g},{b})"
    r, g, b = stops[-1][1]
    return f"rgb({r},{g},{b})"


@dataclass(frozen=True)
class TextHeatmap:
    """HTML of a heatmap; Jupyter shows it inline through `_repr_html_`, `str()` gives the HTML."""

    html: str

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html

    def save(self, path: str) -> None:
        """Write a standalone HTML page."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"<!doctype html><meta charset='utf-8'><body>{self.html}</body>")


def _scale(values: np.ndarray, vmin: float | None, vmax: float | None, cmap: str) -> np.ndarray:
    """Map values [pos] to [0, 1]; the diverging map is symmetric around 0 unless told otherwise."""
    finite = values[np.isfinite(values)]
    if cmap == "diverging" and vmin is None and vmax is None:
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        vmin, vmax = -(bound or 1.0), bound or 1.0
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1)
    if hi <= lo:
        hi = lo + 1.0
    return (values - lo) / (hi - lo)


def _char_span(char: str, value: float, fraction: float, cmap: str, label: str) -> str:
    """One coloured span for one character, its value in the tooltip."""
    shown = {"\n": _NEWLINE_MARK, "\t": " " * _TAB_WIDTH}.get(char, char)
    if not shown.isprintable():
        shown = "·"
    tip = html.escape(f"{label}{value:+.3f}  {char!r}", quote=True)
    text_color = "#fff" if abs(fraction - 0.5) > 0.35 and cmap == "diverging" else "#111"
    if cmap == "sequential" and fraction > 0.7:
        text_color = "#fff"
    style = f"background:{color_of(fraction, cmap)};color:{text_color}"
    return (
        f'<span class="wb-c" style="{style}" title="{tip}">'
        f"{html.escape(shown, quote=True)}</span>"
    )


def text_heatmap(
    text: str,
    values: Sequence[float] | np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "diverging",
    title: str | None = None,
    wrap: int = 100,
    line_numbers: bool = True,
    label: str = "",
) -> TextHeatmap:
    """One coloured span per character of `text`, colour = `values[t]` (paper Figs. 2, 4).

    Lines break at each newline (drawn as ↵, itself coloured) and long lines wrap every `wrap`
    characters with a `↪` continuation mark, as an editor shows source code.
    """
    if not isinstance(text, str) or not text:
        raise EmptyInputError("the text is empty: a heatmap needs at least one character")
    vals = np.asarray(values, dtype=float).reshape(-1)  # [pos]
    if vals.shape[0] != len(text):
        raise ValueError(f"{vals.shape[0]} values for {len(text)} characters; give one per character")
    if wrap < 1:
        raise ValueError(f"wrap must be at least 1, got {wrap}")
    fractions = _scale(vals, vmin, vmax, cmap)
    rows: list[tuple[str, list[str]]] = []  # (gutter label, spans)
    line_no, column, current = 1, 0, []
    rows.append((str(line_no), current))
    for t, char in enumerate(text):
        if column >= wrap:
            current = []
            rows.append(("↪", current))
            column = 0
        current.append(_char_span(char, vals[t], fractions[t], cmap, label))
        column += 1
        if char == "\n" and t < len(text) - 1:
            line_no += 1
            current = []
            rows.append((str(line_no), current))
            column = 0
    gutter_style = (
        "display:inline-block;min-width:3ch;padding-right:1ch;text-align:right;color:#999;"
        "user-select:none"
    )
    lines = []
    for gutter, spans in rows:
        number = f'<span style="{gutter_style}">{gutter}</span>' if line_numbers else ""
        lines.append(f'<div class="wb-line" style="white-space:pre;min-height:1.3em">{number}'
                     f'{"".join(spans)}</div>')
    heading = (
        f'<div style="font-family:sans-serif;font-size:12px;margin:2px 0">'
        f"{html.escape(title)}</div>" if title else ""
    )
    legend = _legend(vals, vmin, vmax, cmap)
    body = (
        f'<div class="wb-heatmap" style="font-family:Menlo,Consolas,monospace;font-size:12px;'
        f'line-height:1.3;margin:4px 0">{heading}{legend}{"".join(lines)}</div>'
    )
    return TextHeatmap(body)


def _legend(vals: np.ndarray, vmin: float | None, vmax: float | None, cmap: str) -> str:
    """A small colour bar with the value range."""
    finite = vals[np.isfinite(vals)]
    probe = np.array([finite.min(), finite.max()]) if finite.size else np.array([0.0, 1.0])
    if cmap == "diverging" and vmin is None and vmax is None:
        bound = float(np.abs(probe).max()) or 1.0
        lo, hi = -bound, bound
    else:
        lo = vmin if vmin is not None else float(probe[0])
        hi = vmax if vmax is not None else float(probe[1])
    stops = ",".join(color_of(x, cmap) for x in np.linspace(0, 1, 5))
    return (
        '<div style="font-family:sans-serif;font-size:10px;color:#555;margin:2px 0">'
        f"{lo:+.2f} <span style=\"display:inline-block;width:80px;height:8px;"
        f'background:linear-gradient(to right,{stops})"></span> {hi:+.2f}</div>'
    )


def heatmap_grid(
    text: str,
    columns: dict[str, np.ndarray],
    *,
    cmap: str = "diverging",
    vmin: float | None = None,
    vmax: float | None = None,
    wrap: int = 80,
    max_columns: int = 2,
) -> TextHeatmap:
    """Several heatmaps of the same text side by side, one per named unit (paper Fig. 4 grid)."""
    if not columns:
        raise ValueError("no units to draw")
    cells = [
        text_heatmap(text, v, cmap=cmap, vmin=vmin, vmax=vmax, title=name, wrap=wrap,
                     line_numbers=False, label=f"{name}: ").html
        for name, v in columns.items()
    ]
    width = max(1, min(max_columns, len(cells)))
    return TextHeatmap(
        f'<div style="display:grid;grid-template-columns:repeat({width},max-content);'
        f'gap:8px 24px">{"".join(f"<div>{c}</div>" for c in cells)}</div>'
    )
