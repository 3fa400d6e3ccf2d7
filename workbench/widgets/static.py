"""A static copy of a widget, shown wherever the live widget cannot be: the HTML page that
`jupyter nbconvert --to html` writes (its widget views need a widget manager from a CDN), GitHub,
an offline reader. In JupyterLab the live widget hides its static copy.

`display_with_fallback(box)` displays the widget, then a text/html output holding the widget's
current view: its HTML panes, every figure in its Output panes (drawn by the plotly.js the notebook
embeds once, workbench.offline_figures), every tab expanded, and its controls' values as a line of
text. The widget carries a hidden `<style>` that hides that copy wherever the widget itself renders.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from workbench.offline_figures import figure_html

FALLBACK_CLASS = "wb-static-fallback"
NOTE = ("Static copy of the widget above as it was first drawn (figures and text); the live widget "
        "needs a running kernel.")


def _widget_by_id(model_id: str) -> widgets.Widget | None:
    from ipywidgets.widgets.widget import _instances

    return _instances.get(model_id)


def _is_figure(obj: Any) -> bool:
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError:
        return False
    return isinstance(obj, BaseFigure)


def _entry_html(entry: dict[str, Any]) -> str:
    """One entry of an Output widget's `outputs` as static HTML."""
    if entry.get("output_type") == "stream":
        return f"<pre>{html.escape(entry.get('text', ''))}</pre>"
    data = entry.get("data", {})
    if "application/vnd.plotly.v1+json" in data:
        return figure_html(data["application/vnd.plotly.v1+json"])
    if "application/vnd.jupyter.widget-view+json" in data:
        inner = _widget_by_id(data["application/vnd.jupyter.widget-view+json"].get("model_id", ""))
        if inner is not None:
            return static_html(inner)
    if "text/html" in data:
        return data["text/html"]
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{data["image/png"]}"/>'
    return f"<pre>{html.escape(str(data.get('text/plain', '')))}</pre>"


def _controls_line(controls: list[widgets.Widget]) -> str:
    parts = [(f"<b>{html.escape(str(c.description))}</b>: " if c.description else "") + html.escape(str(c.value))
             for c in controls]
    return f'<div style="font-family:sans-serif;color:#555">{" · ".join(parts)}</div>' if parts else ""


def static_html(widget: Any) -> str:
    """`widget` (and everything inside it) as static HTML: panes, figures, tab contents, control values.
    Hidden widgets (display none: the style that hides the static copy itself) are left out."""
    if _is_figure(widget):
        return figure_html(widget)
    if isinstance(getattr(widget, "layout", None), widgets.Layout) and widget.layout.display == "none":
        return ""
    if isinstance(widget, widgets.Output):
        return "".join(_entry_html(entry) for entry in widget.outputs)
    if isinstance(widget, (widgets.HTML, widgets.HTMLMath)):
        return widget.value
    if isinstance(widget, widgets.Label):
        return f"<div>{html.escape(widget.value)}</div>"
    if isinstance(widget, widgets.Textarea):
        return f"<pre>{html.escape(widget.value)}</pre>"
    if isinstance(widget, widgets.Box):
        titles = list(getattr(widget, "titles", ()) or ())
        parts, controls = [], []
        for i, child in enumerate(widget.children):
            if isinstance(child, widgets.ValueWidget) and not isinstance(child, (widgets.HTML, widgets.HTMLMath,
                                                                                widgets.Label, widgets.Textarea)):
                controls.append(child)
                continue
            body = static_html(child)
            if body and i < len(titles) and titles[i]:
                body = f"<h4>{html.escape(titles[i])}</h4>{body}"
            parts.append(body)
        return _controls_line(controls) + "".join(parts)
    return ""


def fallback_html(widget: widgets.Widget) -> str:
    """The text/html output shown after `widget`: its static copy, marked so the live widget hides it."""
    return (f'<div class="{FALLBACK_CLASS} wb-static-{widget.model_id}">'
            f'<div style="font-family:sans-serif;color:#888;font-size:small">{html.escape(NOTE)}</div>'
            f"{static_html(widget)}</div>")


def display_with_fallback(box: widgets.Box) -> None:
    """Display `box` and, after it, its static copy; the live widget hides that copy where it renders."""
    from IPython.display import display

    marker = f"wb-static-{box.model_id}"
    if not any(isinstance(c, widgets.HTML) and marker in c.value for c in box.children):
        hider = widgets.HTML(f"<style>.{marker}{{display:none}}</style>", layout=widgets.Layout(display="none"))
        box.children = (*box.children, hider)
    display(box)
    display({"text/html": fallback_html(box), "text/plain": NOTE}, raw=True)
