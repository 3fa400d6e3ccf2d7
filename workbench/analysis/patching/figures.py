"""Plotly heatmaps of a patching table: one panel per hook, layer × position, coloured by effect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["patching_heatmap"]


def patching_heatmap(
    df: pd.DataFrame, value: str = "normalized_effect", labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """A plotly figure from `activation_patching` / `attribution_patching`'s table: one heatmap per
    hook (rows: layers, columns: positions, labelled by `labels`, e.g. the string tokens), a diverging
    colour scale centred on 0."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if value not in df.columns:
        raise KeyError(f"no column {value!r} in the table; use one of {', '.join(df.columns)}")
    if df.empty:
        raise ValueError("the patching table is empty: nothing to draw")
    hooks = list(dict.fromkeys(df["hook"]))
    fig = make_subplots(rows=len(hooks), cols=1, subplot_titles=hooks, vertical_spacing=0.12 / max(len(hooks), 1))
    bound = float(df[value].abs().max()) or 1.0
    for i, hook in enumerate(hooks, start=1):
        grid = df[df["hook"] == hook].pivot_table(index="layer", columns="position", values=value)  # [layer, pos]
        x = [labels[p] if labels is not None and p < len(labels) else str(p) for p in grid.columns]
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(), x=x, y=[str(layer) for layer in grid.index], zmid=0, zmin=-bound,
                zmax=bound, colorscale="RdBu", coloraxis=None, showscale=i == 1, colorbar={"title": value},
                hovertemplate="layer %{y}, position %{x}: %{z:.3g}<extra>" + hook + "</extra>",
            ),
            row=i, col=1,
        )
        fig.update_yaxes(title_text="layer", row=i, col=1)
    direction = df.attrs.get("direction")
    fig.update_layout(title=title or f"activation patching ({direction or 'effect'}): {value}",
                      height=220 + 160 * len(hooks))
    fig.update_xaxes(title_text="position", row=len(hooks), col=1)
    return fig
