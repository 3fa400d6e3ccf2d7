"""Plotly figures for the lenses, kept apart from the math: per-layer curves (Belrose et al. 2023
Fig. 3; Paulo et al. 2024 Fig. 1), the prediction trajectory (Belrose et al. Fig. 1), top-k views.

Each function takes a plain result (`LensEvaluation`, `PredictionTrajectory`, a `TunedLens`'s
history) and returns a `plotly.graph_objects.Figure`.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from workbench.analysis.lens.evaluation import METRICS, LensEvaluation
from workbench.analysis.lens.trajectory import STATISTICS, PredictionTrajectory

__all__ = [
    "depth_comparison_figure",
    "evaluation_figure",
    "top_k_figure",
    "top_k_layers_figure",
    "training_figure",
    "trajectory_figure",
]

_LENS_COLOURS = {"logit lens": "#d62728", "tuned lens": "#1f77b4"}
_OTHER_COLOURS = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_MODEL_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_COLOURSCALES = {"entropy": "Viridis", "kl": "Blues", "ce": "Reds"}


def _colour(name: str, i: int) -> str:
    return _LENS_COLOURS.get(name, _OTHER_COLOURS[i % len(_OTHER_COLOURS)])


def evaluation_figure(
    evaluation: LensEvaluation, metrics: tuple[str, ...] = tuple(METRICS), title: str | None = None
) -> Any:
    """One panel per metric, a line per lens over depth; the model's own cross-entropy dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRICS[m] for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        wide = evaluation.metric(metric)
        for i, lens in enumerate(wide.columns):
            fig.add_trace(
                go.Scatter(
                    x=list(wide.index),
                    y=wide[lens],
                    mode="lines+markers",
                    name=lens,
                    legendgroup=lens,
                    showlegend=col == 1,
                    line={"color": _colour(lens, i)},
                    hovertemplate=f"{lens}, layer %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if metric == "ce_bits":
            fig.add_hline(
                y=evaluation.model_ce_bits,
                line={"dash": "dash", "color": "#666"},
                annotation_text="model",
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="layer", type="category", row=1, col=col)
    if "top1_agreement" in metrics:
        fig.update_yaxes(range=[0, 1.02], row=1, col=list(metrics).index("top1_agreement") + 1)
    fig.update_layout(
        title=title or f"{evaluation.model_name}: lenses on {evaluation.n_tokens:,} held-out characters",
        height=340,
        width=max(420, 330 * len(metrics)),
        template="plotly_white",
    )
    return fig


def trajectory_figure(
    trajectory: PredictionTrajectory,
    statistic: str = "entropy",
    *,
    k: int = 5,
    start: int = 0,
    stop: int | None = None,
    selected: tuple[Any, int] | None = None,
    title: str | None = None,
) -> Any:
    """Layer x position grid coloured by `statistic`, each cell labelled with its top-1 character and
    hovering the top-k with probabilities, as the tuned-lens package draws it (Belrose et al. Fig. 1).

    `start`/`stop` show a window of positions; `selected` (layer, position) outlines one cell.
    """
    import plotly.graph_objects as go

    if statistic not in STATISTICS:
        raise KeyError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    stop = trajectory.n_positions if stop is None else min(stop, trajectory.n_positions)
    if not 0 <= start < stop:
        raise IndexError(f"empty window [{start}, {stop}) of {trajectory.n_positions} positions")
    values = trajectory.statistic(statistic)[:, start:stop]  # [n_readouts, w]
    top1 = trajectory.top1()[:, start:stop]  # [n_readouts, w]
    lp = trajectory.log_probs[:, start:stop]  # [n_readouts, w, d_vocab]
    order = np.argsort(-lp, axis=-1)[..., :k]  # [n_readouts, w, k]
    probs = np.exp(np.take_along_axis(lp, order, axis=-1))  # [n_readouts, w, k]
    labels = trajectory.labels
    inputs = trajectory.str_tokens[start:stop]
    hover = [
        [
            f"layer {labels[r]}, position {start + t} (input {html.escape(inputs[t])!s})<br>"
            f"{STATISTICS[statistic]}: {values[r, t]:.3f}<br>"
            + "<br>".join(
                f"{html.escape(trajectory.vocab[i])!s}: {p:.3f}"
                for i, p in zip(order[r, t], probs[r, t], strict=True)
            )
            for t in range(stop - start)
        ]
        for r in range(len(labels))
    ]
    x = list(range(start, stop))
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=x,
            y=labels,
            text=top1,
            texttemplate="%{text}",
            textfont={"size": 10},
            hovertext=hover,
            hoverinfo="text",
            colorscale=_COLOURSCALES[statistic],
            colorbar={"title": {"text": statistic + " (bits)"}},
        )
    )
    if selected is not None:
        layer, position = selected
        r = labels.index(str(layer))
        fig.add_shape(
            type="rect",
            x0=position - 0.5,
            x1=position + 0.5,
            y0=r - 0.5,
            y1=r + 0.5,
            line={"color": "#ff00ff", "width": 3},
        )
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=inputs, tickangle=0, title_text="input character")
    fig.update_yaxes(type="category", title_text="layer")
    fig.update_layout(
        title=title or f"{trajectory.model_name} · {trajectory.lens_name} · {STATISTICS[statistic]}",
        height=140 + 42 * len(labels),
        width=max(500, 120 + 26 * (stop - start)),
        template="plotly_white",
    )
    return fig


def top_k_figure(
    trajectory: PredictionTrajectory, layer: Any, position: int, k: int = 10, title: str | None = None
) -> Any:
    """Bar chart of the lens's `k` likeliest next characters at one layer and position."""
    import plotly.graph_objects as go

    table = trajectory.top_k(layer, position, k)
    model_probs = np.exp(trajectory.model_log_probs[position % trajectory.n_positions, table["id"]])
    fig = go.Figure(
        [
            go.Bar(
                x=table.token,
                y=table.prob,
                name=f"layer {layer}",
                marker={"color": "#1f77b4"},
                hovertemplate="%{x}: %{y:.3f}<extra>layer " + str(layer) + "</extra>",
            ),
            go.Bar(
                x=table.token,
                y=model_probs,
                name="model output",
                marker={"color": "#bbb"},
                hovertemplate="%{x}: %{y:.3f}<extra>model</extra>",
            ),
        ]
    )
    context = "".join(trajectory.str_tokens[max(0, position - 20) : position + 1])
    fig.update_layout(
        title=title or f"{trajectory.lens_name}, layer {layer}, after …{context}",
        xaxis={"type": "category", "title": "next character"},
        yaxis={"title": "probability", "range": [0, 1]},
        barmode="group",
        height=320,
        template="plotly_white",
    )
    return fig


def top_k_layers_figure(
    trajectory: PredictionTrajectory, position: int, k: int = 5, title: str | None = None
) -> Any:
    """At one position, every layer's top-k characters as a table-like heatmap (colour = probability)."""
    import plotly.graph_objects as go

    tokens, probs = trajectory.top_k_by_layer(position, k)  # [n_readouts, k] each
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            x=[f"#{i + 1}" for i in range(k)],
            y=trajectory.labels,
            text=tokens,
            texttemplate="%{text}",
            colorscale="Greens",
            zmin=0,
            zmax=1,
            hovertemplate="layer %{y}, %{x}: %{text} %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "p"}},
        )
    )
    fig.update_yaxes(type="category", title_text="layer")
    fig.update_layout(
        title=title or f"top-{k} per layer at position {position}",
        height=120 + 40 * len(trajectory.labels),
        width=420,
        template="plotly_white",
    )
    return fig


def training_figure(lens: Any, title: str | None = None) -> Any:
    """Training KL (bits) of each translator over steps, from a fitted `TunedLens.history_`."""
    import plotly.graph_objects as go

    history = lens.history_frame()
    if history.empty:
        raise ValueError("this lens has not been fitted: call lens.fit(text) first")
    fig = go.Figure()
    for column in [c for c in history.columns if c not in ("step", "lr")]:
        fig.add_trace(go.Scatter(x=history.step, y=history[column], mode="lines", name=f"layer {column}"))
    fig.update_layout(
        title=title or "tuned lens training: KL(final || lens) per translator",
        xaxis_title="step",
        yaxis={"title": "KL (bits)", "type": "log"},
        height=320,
        template="plotly_white",
    )
    return fig


def depth_comparison_figure(
    evaluations: Any, metric: str = "kl_bits", lens: str = "tuned lens", title: str | None = None
) -> Any:
    """How early each model knows the next token (Paulo et al. 2024, Fig. 1 across architectures):
    one line per model, `metric` of `lens` against relative depth (embedding 0, last block 1).
    """
    import plotly.graph_objects as go

    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    fig = go.Figure()
    for i, (name, evaluation) in enumerate(dict(evaluations).items()):
        if lens not in evaluation.lenses:
            raise KeyError(f"{name!r} was not evaluated with {lens!r}; it has {evaluation.lenses}")
        values = evaluation.metric(metric)[lens]
        depth = np.linspace(0.0, 1.0, len(values))
        fig.add_trace(
            go.Scatter(
                x=depth,
                y=values.to_numpy(),
                mode="lines+markers",
                name=name,
                text=list(values.index),
                line={"color": _MODEL_COLOURS[i % len(_MODEL_COLOURS)]},
                hovertemplate=f"{name}, layer %{{text}}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"{lens}: {METRICS[metric]} by relative depth",
        xaxis={"title": "relative depth (embedding 0, last block 1)", "range": [-0.03, 1.03]},
        yaxis_title=METRICS[metric],
        height=340,
        template="plotly_white",
    )
    return fig
