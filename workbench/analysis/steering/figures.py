"""Plotly figures for steering, kept apart from the math: behaviour and fluency cost against the
multiplier (Rimsky et al. 2024, Fig. 3), methods compared (Paulo et al. 2024), persistence, and
the consistency of pair differences with the vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from workbench.analysis.steering.controls import SteeringTradeoff
from workbench.analysis.steering.evaluation import SteeringComparison, SteeringSweep
from workbench.analysis.steering.vectors import SteeringVector

__all__ = ["pair_cosine_figure", "persistence_figure", "sweep_figure", "tradeoff_figure"]

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def sweep_figure(sweeps: SteeringSweep | SteeringComparison | Mapping[str, SteeringSweep],
                 title: str | None = None, behaviour_name: str = "p(behaviour)") -> Any:
    """Two panels sharing the multiplier axis: the behaviour (mean ± s.e. over held-out prompts)
    and, when measured, the fluency cost on neutral text (Δ bits per character)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if isinstance(sweeps, SteeringSweep):
        items = {sweeps.label or "steering": sweeps}
    elif isinstance(sweeps, SteeringComparison):
        items = sweeps.sweeps
    else:
        items = dict(sweeps)
    has_cost = all("delta_bpc" in s.table for s in items.values())
    titles = [behaviour_name, "fluency cost on neutral text"][: 2 if has_cost else 1]
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.12, subplot_titles=titles)
    for i, (name, sweep) in enumerate(items.items()):
        t = sweep.table.sort_values("multiplier")
        colour = _COLOURS[i % len(_COLOURS)]
        fig.add_trace(go.Scatter(
            x=t.multiplier, y=t.behaviour, name=name, legendgroup=name, mode="lines+markers",
            line={"color": colour}, error_y={"type": "data", "array": t.behaviour_sem, "visible": True},
            hovertemplate=f"{name}<br>× %{{x:g}}: %{{y:.3f}}<extra></extra>",
        ), row=1, col=1)
        if has_cost:
            fig.add_trace(go.Scatter(
                x=t.multiplier, y=t.delta_bpc, name=name, legendgroup=name, showlegend=False,
                mode="lines+markers", line={"color": colour, "dash": "dot"}, customdata=t.kl,
                hovertemplate=f"{name}<br>× %{{x:g}}: Δ %{{y:+.3f}} bpc, KL %{{customdata:.3f}}"
                              "<extra></extra>",
            ), row=1, col=2)
    fig.update_xaxes(title_text="multiplier")
    fig.update_yaxes(title_text=behaviour_name, rangemode="tozero", row=1, col=1)
    if has_cost:
        fig.update_yaxes(title_text="Δ bits per character", row=1, col=2)
    fig.update_layout(title=title or "Steering sweep", height=360, width=900 if has_cost else 520,
                      template="plotly_white")
    return fig


def persistence_figure(tables: pd.DataFrame | Mapping[str, pd.DataFrame], title: str | None = None,
                       column: str = "state_ratio") -> Any:
    """How a one-time injection decays: `column` (default the carried state's change relative to
    the injection step) against the number of tokens since, one line per model or hook."""
    import plotly.graph_objects as go

    items = {"injection": tables} if isinstance(tables, pd.DataFrame) else dict(tables)
    fig = go.Figure()
    for i, (name, table) in enumerate(items.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        if f"{column}_low" in table and (table[f"{column}_high"] > table[f"{column}_low"]).any():
            band = pd.concat([table.offset, table.offset[::-1]])
            fig.add_trace(go.Scatter(  # the interval over texts, as a shaded band
                x=band, y=pd.concat([table[f"{column}_high"], table[f"{column}_low"][::-1]]),
                fill="toself", fillcolor=colour, opacity=0.18, line={"width": 0}, hoverinfo="skip",
                legendgroup=name, showlegend=False))
        n = f" ({int(table.n_texts.min())} texts)" if "n_texts" in table and table.n_texts.min() > 1 else ""
        fig.add_trace(go.Scatter(x=table.offset, y=table[column], name=name + n, mode="lines",
                                 legendgroup=name, line={"color": colour},
                                 hovertemplate=f"{name}<br>+%{{x}} tokens: %{{y:.3g}}<extra></extra>"))
    labels = {"state_ratio": "|Δ state| / |Δ state at injection|", "kl": "KL(clean ‖ steered), nats",
              "max_logprob_change": "max |Δ log p|"}
    fig.update_layout(title=title or "Persistence of a one-time state injection",
                      xaxis_title="tokens after the injection", yaxis_title=labels.get(column, column),
                      height=340, template="plotly_white")
    if column == "state_ratio":
        fig.update_yaxes(type="log")
    return fig


def tradeoff_figure(tradeoffs: SteeringTradeoff | Mapping[str, SteeringTradeoff],
                    title: str | None = None, behaviour_name: str = "p(behaviour)") -> Any:
    """Behaviour against fluency cost (Δ bits per character), one panel per vector: the vector's
    sweep (markers labelled by multiplier) over the equal-norm random directions' (grey)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    items = {"steering": tradeoffs} if isinstance(tradeoffs, SteeringTradeoff) else dict(tradeoffs)
    fig = make_subplots(rows=1, cols=len(items), subplot_titles=list(items), horizontal_spacing=0.06)
    for col, tradeoff in enumerate(items.values(), start=1):
        for i, sweep in enumerate(tradeoff.random):
            t = sweep.table.sort_values("multiplier")
            fig.add_trace(go.Scatter(
                x=t.delta_bpc, y=t.behaviour, mode="lines", line={"color": "#9e9e9e", "width": 1},
                name="equal-norm random directions", legendgroup="random",
                showlegend=col == 1 and i == 0, hovertemplate="random<br>Δ %{x:+.2f} bpc: %{y:.3f}<extra></extra>",
            ), row=1, col=col)
        t = tradeoff.sweep.table.sort_values("multiplier")
        fig.add_trace(go.Scatter(
            x=t.delta_bpc, y=t.behaviour, mode="lines+markers+text", text=[f"{m:g}" for m in t.multiplier],
            textposition="top center", textfont={"size": 9}, line={"color": _COLOURS[1]},
            name="steering vector (× multiplier)", legendgroup="vector", showlegend=col == 1,
            hovertemplate="vector<br>Δ %{x:+.2f} bpc: %{y:.3f}<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="Δ bits per character", row=1, col=col)
    fig.update_yaxes(title_text=behaviour_name, row=1, col=1)
    fig.update_layout(title=title or "Behaviour against fluency cost, beside equal-norm random directions",
                      height=380, width=max(520, 300 * len(items)), template="plotly_white")
    return fig


def pair_cosine_figure(vectors: SteeringVector | Mapping[str, SteeringVector],
                       title: str | None = None) -> Any:
    """Per vector, each pair's cosine with the mean difference: near 1 when the pairs agree on one
    direction (Rimsky et al. 2024 project pair differences the same way to check a behaviour)."""
    import plotly.graph_objects as go

    items = {vectors.label or vectors.hook: vectors} if isinstance(vectors, SteeringVector) else dict(vectors)
    fig = go.Figure()
    for i, (name, v) in enumerate(items.items()):
        if v.pair_cosines is None:
            continue
        fig.add_trace(go.Box(y=v.pair_cosines.numpy(), name=name, boxpoints="all", jitter=0.4,
                             marker={"color": _COLOURS[i % len(_COLOURS)]}))
    fig.update_layout(title=title or "Agreement of each pair with the steering vector",
                      yaxis={"title": "cos(pair difference, vector)", "range": [-1, 1.05]},
                      showlegend=False, height=340, template="plotly_white")
    return fig
