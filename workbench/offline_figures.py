"""Plotly figures that travel with a notebook: JupyterLab draws plotly's own mimetype, and every
figure also carries an HTML copy drawn by plotly.js embedded once per notebook, so the page
`jupyter nbconvert --to html` writes shows every figure with no network.

A notebook calls `workbench.notebook_setup()` in its first code cell: that cell's output then holds
plotly.js (about 4.7 MB, once), and each later figure's HTML copy uses it. No figure asks a CDN for
plotly.js or MathJax.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from plotly.io import base_renderers

RENDERER = "workbench_inline"


class InlinePlotlyRenderer(base_renderers.HtmlRenderer):
    """text/html for each figure without plotly.js (the page has it once, from `embed_plotlyjs`) and
    without the per-figure MathJax script from a CDN that plotly's own 'notebook' renderer adds."""

    def __init__(self) -> None:
        super().__init__(connected=False, full_html=False, global_init=True, include_plotlyjs=False)
        self.embedded = False

    def activate(self) -> None:
        """plotly calls this before the first figure shows: embed plotly.js unless already done."""
        if not self.embedded:
            self.embed_plotlyjs()

    def embed_plotlyjs(self) -> None:
        """Display plotly.js inline now (in the current cell's output) as `window.Plotly`."""
        super().activate()
        self.embedded = True

    def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
        return {"text/html": figure_html(fig_dict, self.config)}


def figure_html(figure: Any, config: dict | None = None) -> str:
    """A div and a script that draw `figure` with the page's `window.Plotly` (nothing happens where
    plotly.js is absent, or inside a widget's static copy that the live widget hides).
    `figure`: a plotly figure or its dict."""
    import plotly.io as pio

    spec = json.loads(pio.to_json(figure, validate=False))
    div_id = f"wb-plot-{uuid.uuid4().hex}"
    height = (spec.get("layout") or {}).get("height") or 525
    payload = json.dumps({"data": spec.get("data", []), "layout": spec.get("layout", {}),
                          "config": {"responsive": True, **(config or {})}}).replace("</", "<\\/")
    return (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:{int(height)}px; width:100%;"></div>'
        f'<script type="text/javascript">(function () {{ var s = {payload};'
        f' var el = document.getElementById("{div_id}"); if (!window.Plotly || !el) {{ return; }}'
        f' var copy = el.closest(".wb-static-fallback"); if (copy && copy.offsetParent === null) {{ return; }}'
        f' window.Plotly.newPlot(el, s.data, s.layout, s.config); }})();</script>'
    )


def notebook_setup() -> None:
    """Called in a notebook's first code cell: JupyterLab keeps drawing plotly's mimetype; the HTML
    export gets an inline copy of every figure, drawn by plotly.js embedded once, in this cell."""
    import plotly.io as pio

    renderer = pio.renderers[RENDERER] if RENDERER in pio.renderers else InlinePlotlyRenderer()
    pio.renderers[RENDERER] = renderer
    pio.renderers.default = f"plotly_mimetype+{RENDERER}"
    renderer.embed_plotlyjs()
