"""`Explorer`: the skeleton every model explorer widget shares, written once.

A model dropdown over one model or a dict of named models; controls laid out above a busy line and
an error box, then the outputs; any control change recomputes (busy meanwhile), and any error shows
inside the widget while the kernel keeps running. A subclass builds its controls and outputs, then
calls `_assemble`, and implements `_compute` (and `_sync_model_controls`, `_clear` where it has any).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from workbench.errors import SequenceTooLongError
from workbench.widgets.display import BusyState, error_html, set_outputs

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Explorer", "clear", "show"]


class Explorer:
    """Model selection, busy state, error box and recompute-on-change for one model or a dict of them.

    `explorer.widget` is the box to display (the explorer also displays itself); `update()` recomputes.
    """

    busy: BusyState
    widget: widgets.VBox

    def __init__(self, models: HookedModel | Mapping[str, HookedModel], *, max_chars: int | None = None,
                 unknown: str | None = None):
        if unknown not in (None, "error", "map"):
            raise ValueError(f"unknown must be 'error' or 'map' (or None for the tokenizer's own rule), "
                             f"got {unknown!r}")
        self.unknown = unknown
        self.models: dict[str, HookedModel] = dict(models) if isinstance(models, Mapping) else {"model": models}
        if not self.models:
            raise ValueError("give at least one model")
        self.max_chars = max_chars
        names = list(self.models)
        self.model_select = widgets.Dropdown(options=names, value=names[0], description="model")
        self.error = widgets.HTML(value="")
        self._updating = False

    @property
    def model(self) -> HookedModel:
        """The model the dropdown selects."""
        return self.models[self.model_select.value]

    # ----------------------------------------------------------------------------- building
    def _assemble(self, rows: Sequence[widgets.Widget], outputs: Sequence[widgets.Widget],
                  recompute: Sequence[widgets.Widget]) -> None:
        """Lay out `rows` of controls, the busy line, the error box and `outputs`; a change of the model
        resyncs the controls, a change of any control in `recompute` recomputes; then compute once."""
        self.widget = widgets.VBox([*rows, self.busy.widget, self.error, *outputs])
        self.model_select.observe(self._on_model, names="value")
        for control in recompute:
            control.observe(lambda _change: self.update(), names="value")
        self.update()

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Set controls without each change recomputing."""
        previous, self._updating = self._updating, True
        try:
            yield
        finally:
            self._updating = previous

    def _sync_model_controls(self) -> None:
        """Fit the controls to the selected model (layers, quantities, ...)."""

    def _on_model(self, _change: Any) -> None:
        self._sync_model_controls()
        self.update()

    # ----------------------------------------------------------------------------- computing
    def update(self) -> None:
        """Recompute for the current controls (busy meanwhile); an error goes to `self.error`."""
        if self._updating:
            return
        try:
            with self.busy():
                self._compute()
        except Exception as exc:  # shown in the widget: the kernel keeps running
            self.error.value = error_html(exc)
            self._clear()
        else:
            self.error.value = ""

    def _compute(self) -> None:
        raise NotImplementedError

    def _clear(self) -> None:
        """Empty the outputs after an error, so no stale result stands beside it."""

    def _check_length(self, text: str) -> None:
        """A text longer than `max_chars` raises `SequenceTooLongError` saying how to allow more."""
        if self.max_chars is not None and len(text) > self.max_chars:
            error = SequenceTooLongError(len(text), self.max_chars)
            error.args = (f"the text has {len(text)} characters, more than this explorer's "
                          f"max_chars={self.max_chars}; shorten it or pass max_chars=...",)
            raise error

    def _read_text(self, text: str) -> str:
        """A typed text, length-checked; with `unknown="map"` its characters outside the vocabulary
        become the tokenizer's unknown token (as `to_tokens(..., unknown="map")` reads them)."""
        self._check_length(text)
        if self.unknown != "map" or not text:
            return text
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            return text
        return tokenizer.decode(tokenizer.encode(text, unknown="map"))

    def _ipython_display_(self) -> None:
        from workbench.widgets.static import display_with_fallback

        display_with_fallback(self.widget)


def clear(output: widgets.Output, wait: bool = False) -> None:
    """Empty an Output widget (kernel side; `wait` is kept for callers, a replacement is atomic)."""
    set_outputs(output)


def show(output: widgets.Output, *figures: Any, wait: bool = False) -> None:
    """Replace what `output` shows by `figures` (figures, widgets, or strings shown as printed text),
    set from the kernel side (workbench.widgets.display.set_outputs)."""
    set_outputs(output, *figures)
