"""Plotly figures for implicit attention, kept apart from the math (Ali et al. 2024, Figs. 1–3).

`map_figure`: the causal L×L map as a heatmap over characters, signed diverging colours symmetric
around zero, upper triangle blank. `row_heatmap`: one query row as colour over the text.
`perturbation_figure`: loss change by number of removed tokens per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.analysis.implicit_attention.api import ImplicitAttention

__all__ = ["DrawnMap", "char_labels", "drawn_map", "map_figure", "map_matrix", "perturbation_figure", "row_heatmap"]

_SHOWN = {"\n": "↵", "\t": "⇥", " ": "␣"}


def char_labels(chars: Sequence[str]) -> list[str]:
    """Axis labels `t:c` (position, visible character), unique so plotly keeps every row."""
    return [f"{t}:{_SHOWN.get(c, c) if c.isprintable() or c in _SHOWN else '·'}"
            for t, c in enumerate(chars)]


def map_matrix(att: ImplicitAttention | torch.Tensor, channel: int | None = None, batch: int = 0) -> np.ndarray:
    """[query, key] to draw: the aggregated map, one channel, or the mean over channels."""
    maps = att.maps if isinstance(att, ImplicitAttention) else att
    maps = maps[batch]
    if maps.ndim == 3:  # [channel, query, key]
        maps = maps.mean(0) if channel is None else maps[channel]
    return maps.detach().float().cpu().numpy()


@dataclass(frozen=True)
class DrawnMap:
    """What a map figure draws: the values (NaN above the diagonal, where no key is visible) and the
    colour range, so every view of a map (plotly, CircuitsVis) shows the same numbers."""

    values: np.ndarray  # [query, key] float32, NaN where key > query
    queries: list[int]  # [query] absolute positions of the rows
    zmin: float
    zmax: float
    signed: bool


def drawn_map(att: ImplicitAttention | torch.Tensor, channel: int | None = None, batch: int = 0) -> DrawnMap:
    """The values and colour range `map_figure` draws for one map (see `map_matrix`)."""
    matrix = map_matrix(att, channel, batch)  # [query, key]
    q, k = matrix.shape
    queries = [int(t) for t in att.queries] if isinstance(att, ImplicitAttention) else list(range(q))
    causal = np.arange(k)[None, :] > np.asarray(queries)[:, None]  # [query, key]: keys after the query
    shown = np.where(causal, np.nan, matrix)
    bound = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    signed = bool(np.nanmin(shown) < 0) if np.isfinite(shown).any() else False
    return DrawnMap(shown, queries, -bound if signed else 0.0, bound or 1.0, signed)


def map_figure(att: ImplicitAttention | torch.Tensor, chars: Sequence[str] | None = None, *,
               channel: int | None = None, batch: int = 0, title: str | None = None,
               height: int = 520) -> Any:
    """Heatmap of a map [query, key]; `channel` picks one channel of per-channel maps (else mean)."""
    import plotly.graph_objects as go

    drawn = drawn_map(att, channel, batch)
    k = drawn.values.shape[1]
    keys = char_labels(chars) if chars is not None else [str(j) for j in range(k)]
    queries = [keys[t] for t in drawn.queries]
    shown, bound, signed = drawn.values, drawn.zmax, drawn.signed
    fig = go.Figure(go.Heatmap(
        z=shown, x=keys, y=queries, colorscale="RdBu" if signed else "Reds",
        reversescale=signed, zmid=0 if signed else None, zmin=drawn.zmin, zmax=bound,
        hovertemplate="query %{y}<br>key %{x}<br>Ã %{z:.4g}<extra></extra>",
        colorbar={"title": "Ã"},
    ))
    if title is None and isinstance(att, ImplicitAttention):
        which = f"channel {int(att.channels[channel])}" if channel is not None and att.maps.ndim == 4 \
            else (att.aggregate if att.aggregate != "none" else "mean over channels")
        title = f"Implicit attention, {att.family} layer {att.layer} ({att.mode} mode, {which})"
    fig.update_layout(title=title, height=height, template="plotly_white",
                      xaxis={"title": "key position (value token)", "tickfont": {"size": 9}},
                      yaxis={"title": "query position", "autorange": "reversed", "tickfont": {"size": 9}})
    return fig


def row_heatmap(text: str, row: Sequence[float] | np.ndarray | torch.Tensor, query: int,
                title: str | None = None) -> Any:
    """One query's row as background colour over the text (cells' `text_heatmap`), query boxed."""
    from workbench.analysis.heatmap import text_heatmap

    values = torch.as_tensor(row).detach().float().cpu().numpy().reshape(-1)[: len(text)]
    heat = text_heatmap(text, values, title=title or f"row of query {query} ({text[query]!r})",
                        label="Ã: ", wrap=100)
    spans = heat.html.split('<span class="wb-c"')
    if 0 <= query < len(spans) - 1:  # outline the query character
        rest = spans[query + 1][len(' style="'):]
        spans[query + 1] = ' data-query="1" style="outline:2px solid #000;' + rest
    return type(heat)('<span class="wb-c"'.join(spans))


def perturbation_figure(result: Any, title: str | None = None) -> Any:
    """Mean loss change vs removed tokens, most-attributed first (solid) and least first (dotted)."""
    import plotly.graph_objects as go

    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f", "#8c564b", "#17becf"]
    fig = go.Figure()
    for i, method in enumerate(result.table.method):
        for order, dash in (("most", "solid"), ("least", "dot")):
            rows = result.curves[(result.curves.method == method) & (result.curves.order == order)]
            fig.add_trace(go.Scatter(
                x=rows.removed, y=rows.delta_loss, mode="lines+markers", name=f"{method} ({order} first)",
                legendgroup=method, line={"color": colours[i % len(colours)], "dash": dash},
                error_y={"type": "data", "array": rows["sem"], "visible": True, "thickness": 1},
            ))
    fig.update_layout(
        title=title or (f"Perturbation test ({result.perturbation}, {result.n_examples} windows of "
                        f"{result.context} tokens): loss change"),
        xaxis_title="tokens removed", yaxis_title="Δ next-token loss (nats)", height=420,
        template="plotly_white",
    )
    return fig
