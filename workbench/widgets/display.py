"""Shared display helpers of the widgets: whether a live kernel can show rich output, the in-widget
error box, the busy state a widget shows while it computes, and what an Output widget shows.

An Output widget's content is always set here, in the kernel (its `outputs` trait), never by the
front end capturing a `with output:` block. A captured block makes the front end send the captured
output back to the kernel as comm messages while the cell still runs; a headless client (nbclient,
hence `jupyter nbconvert --execute` and papermill) sends those on the shell socket it is waiting on
for the cell's reply, through a raw shadow of that socket, and the wake-up for the reply can be lost
(the run then stalls until the cell's timeout). See docs/design.md, "Standard runners".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

BUSY_MESSAGE = "computing…"
BUSY_ICON = "spinner spin"  # Font Awesome's spinner, turning (ipywidgets adds the fa- prefixes)

# A CSS spinner for the status line (no image, no network); the keyframes travel with the HTML.
_SPINNER = (
    "<style>@keyframes wb-spin{to{transform:rotate(360deg)}}</style>"
    '<span class="wb-spinner" style="display:inline-block;width:11px;height:11px;'
    "border:2px solid #ccc;border-top-color:#1976d2;border-radius:50%;"
    'animation:wb-spin .8s linear infinite;vertical-align:middle"></span>'
)


def in_kernel() -> bool:
    """True inside a Jupyter kernel; outside one, `display()` would only print a figure's repr."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def output_entry(item: Any) -> dict[str, Any]:
    """One entry of an Output widget's `outputs`: a string as printed text, anything else as the
    display data IPython would show for it (a plotly figure: its JSON and its inline HTML)."""
    if isinstance(item, str):
        return {"output_type": "stream", "name": "stdout", "text": item if item.endswith("\n") else item + "\n"}
    from IPython.core.formatters import format_display_data

    data, metadata = format_display_data(item)
    if _is_plotly_figure(item) and not data.keys() & {PLOTLY_MIME, "application/vnd.jupyter.widget-view+json"}:
        import json

        import plotly.io as pio

        data[PLOTLY_MIME] = json.loads(pio.to_json(item, validate=False))
    return {"output_type": "display_data", "data": data, "metadata": metadata}


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _is_plotly_figure(item: Any) -> bool:
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError:
        return False
    return isinstance(item, BaseFigure)


def set_outputs(output: widgets.Output, *items: Any) -> None:
    """Make `output` show exactly `items` (figures, widgets, strings), set from the kernel side."""
    output.outputs = tuple(output_entry(item) for item in items)


class _IntoOutput:
    """An IPython display publisher that appends what is displayed to an Output widget's `outputs`
    (a tqdm bar's widget, for one), instead of sending it to the front end."""

    def __init__(self, output: widgets.Output, previous: Any):
        self.output, self.previous = output, previous
        self.is_publishing = False

    def publish(self, data: dict, metadata: dict | None = None, source: Any = None, *,
                transient: dict | None = None, update: bool = False, **_: Any) -> None:
        entry = {"output_type": "display_data", "data": data, "metadata": metadata or {}}
        self.output.outputs = (*self.output.outputs, entry)

    def clear_output(self, wait: bool = False) -> None:
        self.output.outputs = ()

    def __getattr__(self, name: str) -> Any:  # everything else as the kernel's own publisher does it
        return getattr(self.previous, name)


@contextmanager
def displays_into(output: widgets.Output) -> Iterator[None]:
    """Inside the block, `display()` in the kernel appends to `output` (kernel side, no capture by the
    front end); outside a kernel, nothing changes."""
    from IPython import get_ipython

    shell = get_ipython() if in_kernel() else None
    if shell is None:
        yield
        return
    previous = shell.display_pub
    shell.display_pub = _IntoOutput(output, previous)
    try:
        yield
    finally:
        shell.display_pub = previous


def error_html(exc: BaseException) -> str:
    """An exception as a red box inside a widget: its class and message, HTML-escaped."""
    import html

    return (
        '<div style="color:#b00020;font-family:sans-serif;padding:4px;'
        f'border-left:3px solid #b00020"><b>{html.escape(type(exc).__name__)}</b>: '
        f"{html.escape(str(exc))}</div>"
    )


def busy_html(message: str = BUSY_MESSAGE) -> str:
    """The status line while a widget computes: a turning spinner and `message`."""
    import html

    return (
        '<span class="wb-busy" style="font-family:sans-serif;color:#555">'
        f"{_SPINNER} {html.escape(message)}</span>"
    )


def done_html(seconds: float, failed: bool = False) -> str:
    """The status line after a computation: how long it took (the error itself shows in the error box)."""
    verb = "failed after" if failed else "done in"
    style = "font-family:sans-serif;color:#888;font-size:small"
    return f'<span class="wb-done" style="{style}">{verb} {seconds:.1f} s</span>'


class BusyState:
    """What a widget shows while it computes, so a click or a slider move visibly does something.

    Used as `with explorer.busy(): ...`. While the block runs, every control is disabled, every
    button reads 'computing…' with a turning spinner, and the status line shows a spinner; tqdm
    progress bars (`tqdm.auto`) drawn inside the block land in `progress`, inside the widget (in a
    kernel, set from the kernel side: `displays_into`). Afterwards every control gets back its own
    `disabled`, description and icon, and the status line says how long it took; also when the block
    raises (the exception propagates, for the widget to show in its error box). Re-entering while
    busy (a recompute triggered by a recompute) changes nothing.
    """

    def __init__(self, controls: Iterable[widgets.Widget] = (), message: str = BUSY_MESSAGE):
        self.controls: list[widgets.Widget] = list(controls)
        self.message = message
        self.status = widgets.HTML(value="")
        self.progress = widgets.Output()
        self.widget = widgets.VBox([self.status, self.progress])
        self.active = False
        self.seconds: float | None = None

    @contextmanager
    def __call__(self, message: str | None = None) -> Iterator[BusyState]:
        if self.active:  # nested: the outer block already shows the busy state
            yield self
            return
        message = message or self.message
        saved = [_snapshot(control) for control in self.controls]
        start = time.perf_counter()
        self.active = True
        failed = True
        try:
            for control in self.controls:
                control.disabled = True
                if isinstance(control, widgets.Button):
                    control.description, control.icon = message, BUSY_ICON
            self.status.value = busy_html(message)
            self.progress.outputs = ()
            with displays_into(self.progress):
                yield self
            failed = False
        finally:
            self.active = False
            self.seconds = time.perf_counter() - start
            for control, state in zip(self.controls, saved, strict=True):
                for name, value in state.items():
                    setattr(control, name, value)
            self.status.value = done_html(self.seconds, failed)


def _snapshot(control: widgets.Widget) -> dict[str, Any]:
    """The traits the busy state changes on `control`, to put back afterwards."""
    names = ["disabled"] + (["description", "icon"] if isinstance(control, widgets.Button) else [])
    return {name: getattr(control, name) for name in names if hasattr(control, name)}
