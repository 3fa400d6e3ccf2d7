"""Figures for MIPS (Michaud et al. 2024, Fig. 2-3): the hidden-state cloud by discovered state, and the FSM graph."""

from __future__ import annotations

import numpy as np

from workbench.analysis.mips.fsm import FSM

__all__ = ["fsm_figure", "state_cloud_figure"]


def state_cloud_figure(hidden: np.ndarray, labels: np.ndarray, title: str = "hidden states"):
    """Hidden states `[n, d]` projected on their top two principal axes, coloured by state label `[n]`."""
    import plotly.graph_objects as go

    h = np.asarray(hidden, dtype=float).reshape(len(labels), -1)
    h = h - h.mean(0)
    if h.shape[1] >= 2:
        _, _, vt = np.linalg.svd(h, full_matrices=False)
        xy = h @ vt[:2].T  # [n, 2]
    else:
        xy = np.stack([h[:, 0], np.zeros(len(h))], 1)
    fig = go.Figure(
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            marker={
                "color": np.asarray(labels),
                "colorscale": "Turbo",
                "size": 6,
                "showscale": True,
                "colorbar": {"title": "state"},
            },
            text=[f"state {v}" for v in labels],
        )
    )
    fig.update_layout(title=title, xaxis_title="PC 1", yaxis_title="PC 2", height=380, margin={"t": 40})
    return fig


def fsm_figure(fsm: FSM, title: str = "finite state machine"):
    """States on a circle, an arrow per transition labelled by its symbols, the output in each node."""
    import plotly.graph_objects as go

    n = fsm.n_states
    angle = 2 * np.pi * np.arange(n) / max(n, 1)
    pos = np.stack([np.cos(angle), np.sin(angle)], 1)  # [n, 2]
    grouped: dict[tuple[int, int], list] = {}
    for q, q2, s in fsm.edges():
        grouped.setdefault((q, q2), []).append(s)
    fig = go.Figure()
    for (q, q2), syms in grouped.items():
        a, b = pos[q], pos[q2]
        label = ",".join(map(str, syms[:6])) + ("…" if len(syms) > 6 else "")
        if q == q2:
            fig.add_annotation(
                x=a[0] * 1.18, y=a[1] * 1.18, text=f"↺ {label}", showarrow=False, font={"size": 10}
            )
            continue
        fig.add_annotation(
            x=b[0],
            y=b[1],
            ax=a[0],
            ay=a[1],
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowwidth=1,
            opacity=0.6,
        )
        mid = (a + b) / 2 + 0.06 * np.array([-(b - a)[1], (b - a)[0]])
        fig.add_annotation(x=mid[0], y=mid[1], text=label, showarrow=False, font={"size": 10})
    text = [f"q{q}{' (start)' if q == fsm.initial else ''}<br>out {fsm.out[q]}" for q in range(n)]
    fig.add_trace(
        go.Scatter(
            x=pos[:, 0],
            y=pos[:, 1],
            mode="markers+text",
            text=text,
            textposition="top center",
            marker={"size": 26, "color": ["#f4a261" if q == fsm.initial else "#8ecae6" for q in range(n)]},
        )
    )
    fig.update_layout(
        title=title,
        showlegend=False,
        height=420,
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
        margin={"t": 40},
    )
    return fig
