"""Plotly figures for the cell analyses, kept apart from the math (Karpathy et al. 2015 Figs. 3, 5, 6).

Each function takes the plain result of an analysis and returns a `plotly.graph_objects.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.analysis.cells.discovery import CellDiscovery
from workbench.analysis.cells.ngram import ERROR_CATEGORIES, ErrorAnalysis
from workbench.analysis.cells.recording import CellRecording
from workbench.analysis.cells.saturation import GateSaturation
from workbench.analysis.cells.views import Unit, colour_range, unit_label, unit_matrix

__all__ = [
    "discovery_figure",
    "error_breakdown_figure",
    "long_range_figure",
    "saturation_figure",
    "unit_trace_figure",
    "units_heatmap_figure",
]

_LAYER_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def saturation_figure(sat: GateSaturation, title: str | None = None) -> Any:
    """One panel per gate: each unit a dot at (fraction left-saturated, fraction right-saturated),
    coloured by layer, as the paper's Fig. 3; dots near the top-left edge are integrators.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    gates = list(dict.fromkeys(g for _, g in sat.left))
    layers = sorted({layer for layer, _ in sat.left})
    fig = make_subplots(rows=1, cols=len(gates), subplot_titles=[f"gate {g}" for g in gates],
                        shared_yaxes=True)
    for col, gate in enumerate(gates, start=1):
        fig.add_trace(go.Scatter(x=[0, 1], y=[1, 0], mode="lines", showlegend=False,
                                 line={"color": "#ccc", "dash": "dot"}, hoverinfo="skip"),
                      row=1, col=col)
        for layer in layers:
            if (layer, gate) not in sat.left:
                continue
            left, right = sat.left[(layer, gate)], sat.right[(layer, gate)]
            fig.add_trace(go.Scatter(
                x=left, y=right, mode="markers", name=f"layer {layer}",
                legendgroup=f"layer {layer}", showlegend=col == 1,
                marker={"color": _LAYER_COLOURS[layer % len(_LAYER_COLOURS)], "size": 6,
                        "opacity": 0.7},
                customdata=np.arange(left.shape[0]),
                hovertemplate=f"layer {layer} {gate}[%{{customdata}}]<br>left %{{x:.2f}}"
                              "<br>right %{y:.2f}<extra></extra>",
            ), row=1, col=col)
        fig.update_xaxes(title_text=f"fraction < {sat.low}", range=[-0.03, 1.03], row=1, col=col)
    fig.update_yaxes(title_text=f"fraction > {sat.high}", range=[-0.03, 1.03], row=1, col=1)
    fig.update_layout(title=title or f"Gate saturation over {sat.n_positions:,} characters",
                      height=360, width=max(420, 300 * len(gates)), template="plotly_white")
    return fig


def discovery_figure(discovery: CellDiscovery, title: str | None = None) -> Any:
    """Per feature, the held-out score of its best unit (bars) labelled with the unit."""
    import plotly.graph_objects as go

    best = discovery.best().iloc[::-1]
    labels = [f"L{r.layer} {r.quantity}[{r.unit}]" for r in best.itertuples()]
    fig = go.Figure(go.Bar(
        x=best.score, y=best.feature, orientation="h", text=labels, textposition="outside",
        marker={"color": np.where(best.score.fillna(0) > 0.5, "#2ca02c", "#999")},
        hovertemplate="%{y}: %{text}<br>held-out r %{x:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title or "Best single unit per feature (held-out correlation)",
                      xaxis={"range": [min(0.0, float(best.score.min(skipna=True) or 0)), 1.15],
                             "title": "held-out r (sign of the train r)"},
                      height=max(250, 28 * len(best) + 100), template="plotly_white")
    return fig


def error_breakdown_figure(analyses: ErrorAnalysis | Mapping[str, ErrorAnalysis],
                           title: str | None = None) -> Any:
    """The paper's Fig. 6: the model's errors peeled off by category, one bar group per model."""
    import plotly.graph_objects as go

    items = {"model": analyses} if isinstance(analyses, ErrorAnalysis) else dict(analyses)
    fig = go.Figure()
    for name, analysis in items.items():
        counts = analysis.counts()
        fig.add_trace(go.Bar(x=counts.category, y=counts.fraction, name=name,
                             text=counts.errors, textposition="outside",
                             customdata=counts.meaning,
                             hovertemplate="%{x}: %{y:.1%} of errors (%{text})<br>%{customdata}"
                                           "<extra></extra>"))
    fig.update_layout(title=title or "Errors by category (each to the first that explains it)",
                      yaxis={"title": "fraction of the model's errors", "tickformat": ".0%"},
                      xaxis={"categoryorder": "array", "categoryarray": list(ERROR_CATEGORIES)},
                      barmode="group", height=380, template="plotly_white")
    return fig


def long_range_figure(binned: Any, n: int | None = None, title: str | None = None) -> Any:
    """Mean probability of the correct closing bracket by distance to its open bracket (Fig. 5):
    one point per bin with its interval as error bars, every bin on the axis, each labelled with its
    bracket count (an empty bin shows n=0 and no point)."""
    import plotly.graph_objects as go

    bins = binned.bin.astype(str).tolist()
    fig = go.Figure()
    series = [("p_model", "recurrent model", "#1f77b4"), ("p_ngram", f"{n}-gram" if n else "n-gram", "#ff7f0e")]
    for column, name, colour in series:
        mean = binned[column].to_numpy(dtype=float)
        upper = binned.get(f"{column}_hi", binned[column]).to_numpy(dtype=float) - mean
        lower = mean - binned.get(f"{column}_lo", binned[column]).to_numpy(dtype=float)
        fig.add_trace(go.Scatter(
            x=bins, y=mean, name=name, mode="markers", marker={"color": colour, "size": 9},
            error_y={"type": "data", "array": upper, "arrayminus": lower, "visible": True},
            customdata=binned.brackets,
            hovertemplate="%{x}: mean p %{y:.2f} (%{customdata} brackets)<extra>" + name + "</extra>",
        ))
    fig.add_trace(go.Bar(x=bins, y=binned.brackets, name="brackets (right axis)", yaxis="y2",
                         marker={"color": "#ddd"}, text=[f"n={c}" for c in binned.brackets],
                         textposition="outside", hoverinfo="skip"))
    fig.update_layout(title=title or "Closing brackets: p(correct) by distance to the open bracket",
                      xaxis={"title": "distance (characters)", "categoryorder": "array", "categoryarray": bins},
                      yaxis={"title": "mean p (95% bootstrap interval)", "range": [0, 1.05]},
                      yaxis2={"title": "brackets", "overlaying": "y", "side": "right", "showgrid": False,
                              "rangemode": "tozero"},
                      height=380, template="plotly_white", legend={"orientation": "h", "y": -0.25})
    fig.data = fig.data[-1:] + fig.data[:-1]  # the count bars behind the points
    return fig


def unit_trace_figure(recording: CellRecording, layer: int, quantity: str, unit: int,
                      feature: np.ndarray | None = None, feature_name: str = "feature") -> Any:
    """A unit's value along the text, with a feature on a second axis."""
    import plotly.graph_objects as go

    v = recording.unit(layer, quantity, unit)
    fig = go.Figure(go.Scatter(y=v, name=f"L{layer} {quantity}[{unit}]", mode="lines",
                               text=list(recording.text),
                               hovertemplate="%{x}: %{text|%s} %{y:.3f}<extra></extra>"))
    if feature is not None:
        fig.add_trace(go.Scatter(y=feature, name=feature_name, mode="lines", yaxis="y2",
                                 line={"dash": "dot"}))
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": feature_name})
    fig.update_layout(xaxis_title="position", height=300, template="plotly_white")
    return fig


def units_heatmap_figure(recording: CellRecording, units: Sequence[Unit], *, squash: bool = False,
                         title: str | None = None) -> Any:
    """Units x characters heatmap: row i is `units[i]` = (layer, quantity, unit) over the text, the
    values of `cell_heatmap`, one row per unit; the colour range is `cell_heatmap`'s for the first unit's
    quantity (0..1 for a gate, else symmetric at the largest |value| shown)."""
    import plotly.graph_objects as go

    from workbench.analysis.implicit_attention.figures import char_labels

    z = unit_matrix(recording, units, squash=squash)  # [n_units, pos]
    low, high = colour_range(z, units[0][1], recording.family)
    sequential = low == 0.0 and high == 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=char_labels(recording.text), y=[unit_label(u) for u in units],
        colorscale="Greens" if sequential else "RdBu", reversescale=not sequential,
        zmin=low, zmax=high, hovertemplate="%{y}<br>%{x}: %{z:.4g}<extra></extra>",
    ))
    fig.update_layout(title=title or f"{len(units)} unit(s) over {len(recording):,} characters",
                      height=160 + 24 * len(units), template="plotly_white",
                      xaxis={"tickfont": {"size": 9}}, yaxis={"autorange": "reversed"})
    return fig
