"""`CellExplorer`: an ipywidgets front end to `workbench.analysis.cells` (Karpathy et al. 2015).

Choose model, layer, quantity and unit (or the top units for a feature), edit the text, and the
heatmap, feature ranking and gate-saturation plot update. Every error (empty text, unknown
characters, a text over the memory budget) is shown inside the widget; the kernel keeps running.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from workbench.analysis.cells import (
    FEATURES,
    GATES,
    CellRecording,
    cell_heatmap,
    discover_cells,
    gate_saturation,
    record,
    top_units_heatmap,
    unit_profile,
)
from workbench.analysis.cells.figures import saturation_figure
from workbench.analysis.cells.recording import mixer_quantities
from workbench.errors import SequenceTooLongError
from workbench.widgets.display import BusyState, error_html
from workbench.widgets.display import in_kernel as _in_kernel

__all__ = ["CellExplorer"]

DEFAULT_TEXT = 'def area(w, h):\n    """Area of a (w x h) box."""\n    return max(0, w) * (h + 1)\n'
MODES = ("unit", "top units for feature")


class CellExplorer:
    """Heatmap, feature ranking and saturation for one model (or a dict of named models).

    `explorer.widget` is the box to display (the explorer also displays itself). `update()` reruns
    the analysis; setting any control's value calls it. `max_chars` and `memory_budget_bytes` guard
    the recording.
    """

    def __init__(
        self,
        models: Any,
        text: str = DEFAULT_TEXT,
        *,
        max_chars: int = 5000,
        memory_budget_bytes: int | None = None,
        top_k: int = 3,
    ):
        self.models: dict[str, Any] = (
            dict(models) if isinstance(models, Mapping) else {"model": models}
        )
        if not self.models:
            raise ValueError("give at least one model")
        self.max_chars, self.memory_budget_bytes, self.top_k = max_chars, memory_budget_bytes, top_k
        self.recording: CellRecording | None = None
        self.saturation_figure: Any = None
        names = list(self.models)
        style = {"description_width": "initial"}
        self.model_select = widgets.Dropdown(options=names, value=names[0], description="model")
        self.layer_select = widgets.Dropdown(description="layer", style=style)
        self.quantity_select = widgets.Dropdown(description="quantity", style=style)
        self.mode_select = widgets.ToggleButtons(options=MODES, value="unit")
        self.unit_select = widgets.BoundedIntText(value=0, min=0, max=0, description="unit",
                                                  layout={"width": "150px"})
        self.feature_select = widgets.Dropdown(options=list(FEATURES), value="bracket_depth",
                                               description="feature")
        self.text_input = widgets.Textarea(value=text, continuous_update=False,
                                           layout={"width": "100%", "height": "120px"})
        self.busy = BusyState([self.model_select, self.layer_select, self.quantity_select, self.mode_select,
                               self.unit_select, self.feature_select, self.text_input])
        self.error = widgets.HTML(value="")
        self.heatmap = widgets.HTML(value="")
        self.ranking = widgets.HTML(value="")
        self.saturation = widgets.Output()
        self._sync_model_controls()
        tabs = widgets.Tab(children=[self.heatmap, self.ranking, self.saturation])
        for i, title in enumerate(("heatmap", "feature ranking", "gate saturation")):
            tabs.set_title(i, title)
        self.widget = widgets.VBox([
            widgets.HBox([self.model_select, self.layer_select, self.quantity_select]),
            widgets.HBox([self.mode_select, self.unit_select, self.feature_select]),
            self.text_input, self.busy.widget, self.error, tabs,
        ])
        self.model_select.observe(self._on_model, names="value")
        for control in (self.layer_select, self.quantity_select, self.mode_select,
                        self.unit_select, self.feature_select, self.text_input):
            control.observe(lambda _change: self.update(), names="value")
        self.update()

    # ----------------------------------------------------------------------------- state
    @property
    def model(self) -> Any:
        return self.models[self.model_select.value]

    def _sync_model_controls(self) -> None:
        model = self.model
        quantities = [q for q in mixer_quantities(model) if q != "out"]
        self._updating = True
        try:
            self.layer_select.options = list(range(len(model.blocks)))
            self.layer_select.value = 0
            self.quantity_select.options = quantities
            self.quantity_select.value = "c" if "c" in quantities else quantities[-1]
            self.unit_select.max = model.cfg.d_hidden - 1
            self.unit_select.value = min(self.unit_select.value, self.unit_select.max)
        finally:
            self._updating = False

    def _on_model(self, _change: Any) -> None:
        self._sync_model_controls()
        self.update()

    # ----------------------------------------------------------------------------- update
    def update(self) -> None:
        """Recompute everything for the current controls (busy meanwhile); an error goes to `self.error`."""
        if getattr(self, "_updating", False):
            return
        try:
            with self.busy():
                self._compute()
        except Exception as exc:  # shown in the widget: the kernel keeps running
            self.error.value = error_html(exc)
            self.heatmap.value = self.ranking.value = ""
        else:
            self.error.value = ""

    def _compute(self) -> None:
        text = self.text_input.value
        if len(text) > self.max_chars:
            error = SequenceTooLongError(len(text), self.max_chars)
            error.args = (f"the text has {len(text)} characters, more than this explorer's "
                          f"max_chars={self.max_chars}; shorten it or pass max_chars=...",)
            raise error
        model = self.model
        layer, quantity = int(self.layer_select.value), str(self.quantity_select.value)
        gates = list(GATES.get(model.cfg.family, ()))
        wanted = list(dict.fromkeys([quantity, *gates]))
        rec = record(model, text, wanted, None, memory_budget_bytes=self.memory_budget_bytes)
        self.recording = rec
        feature = str(self.feature_select.value)
        if self.mode_select.value == "unit":
            self.heatmap.value = cell_heatmap(rec, layer=layer, quantity=quantity,
                                              unit=int(self.unit_select.value)).html
            profile = unit_profile(rec, layer, quantity, int(self.unit_select.value))
            self.ranking.value = (
                f"<b>features of layer {layer} {html.escape(quantity)}"
                f"[{int(self.unit_select.value)}]</b>"
                + profile.head(8).to_html(index=False, float_format="%.3f", na_rep="–")
            )
        else:
            keys = [(lay, quantity) for lay in range(len(model.blocks))]
            found = discover_cells(rec, [feature], keys=keys)
            self.heatmap.value = top_units_heatmap(rec, found, feature, self.top_k).html
            table = found.top(feature, 10)[["layer", "quantity", "unit", "train_r", "score"]]
            self.ranking.value = (
                f"<b>units ranked for {html.escape(feature)}</b> (chosen on the first half of the "
                "text, scored on the second)"
                + table.to_html(index=False, float_format="%.3f", na_rep="–")
            )
        self._draw_saturation(rec, gates)

    def _draw_saturation(self, rec: CellRecording, gates: list[str]) -> None:
        self.saturation.clear_output()
        if not gates:
            self.saturation_figure = None
            with self.saturation:
                print(f"a {rec.family} model has no sigmoid gates")
            return
        self.saturation_figure = saturation_figure(gate_saturation(rec, gates=gates))
        if _in_kernel():  # outside a kernel, display() would print the figure's repr
            from IPython.display import display

            with self.saturation:
                display(self.saturation_figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
