"""`CellExplorer`: an ipywidgets front end to `workbench.analysis.cells` (Karpathy et al. 2015).

Choose model, layer, quantity and unit (or the top units for a feature), edit the text, and the
heatmap, feature ranking and gate-saturation plot update. Every error (empty text, unknown
characters, a text over the memory budget) is shown inside the widget; the kernel keeps running.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
from workbench.widgets.display import BusyState
from workbench.widgets.explorer import Explorer, show

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["CellExplorer"]

DEFAULT_TEXT = 'def area(w, h):\n    """Area of a (w x h) box."""\n    return max(0, w) * (h + 1)\n'
MODES = ("unit", "top units for feature")


class CellExplorer(Explorer):
    """Heatmap, feature ranking and saturation for one model (or a dict of named models).

    `explorer.widget` is the box to display (the explorer also displays itself). `update()` reruns
    the analysis; setting any control's value calls it. `max_chars` and `memory_budget_bytes` guard
    the recording.
    """

    def __init__(
        self,
        models: HookedModel | Mapping[str, HookedModel],
        text: str = DEFAULT_TEXT,
        *,
        max_chars: int = 5000, unknown: str | None = None,
        memory_budget_bytes: int | None = None,
        top_k: int = 3,
    ):
        super().__init__(models, max_chars=max_chars, unknown=unknown)
        self.memory_budget_bytes, self.top_k = memory_budget_bytes, top_k
        self.recording: CellRecording | None = None
        self.saturation_figure: Any = None
        style = {"description_width": "initial"}
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
        self.heatmap = widgets.HTML(value="")
        self.ranking = widgets.HTML(value="")
        self.saturation = widgets.Output()
        self._sync_model_controls()
        tabs = widgets.Tab(children=[self.heatmap, self.ranking, self.saturation])
        for i, title in enumerate(("heatmap", "feature ranking", "gate saturation")):
            tabs.set_title(i, title)
        self._assemble(
            [widgets.HBox([self.model_select, self.layer_select, self.quantity_select]),
             widgets.HBox([self.mode_select, self.unit_select, self.feature_select]), self.text_input],
            [tabs],
            [self.layer_select, self.quantity_select, self.mode_select, self.unit_select, self.feature_select,
             self.text_input],
        )

    def _sync_model_controls(self) -> None:
        model = self.model
        quantities = [q for q in mixer_quantities(model) if q != "out"]
        with self._quiet():
            self.layer_select.options = list(range(len(model.blocks)))
            self.layer_select.value = 0
            self.quantity_select.options = quantities
            self.quantity_select.value = "c" if "c" in quantities else quantities[-1]
            self.unit_select.max = model.cfg.d_hidden - 1
            self.unit_select.value = min(self.unit_select.value, self.unit_select.max)

    def _clear(self) -> None:
        self.heatmap.value = self.ranking.value = ""

    def _compute(self) -> None:
        text = self._read_text(self.text_input.value)
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
        if not gates:
            self.saturation_figure = None
            show(self.saturation, f"a {rec.family} model has no sigmoid gates")
            return
        self.saturation_figure = saturation_figure(gate_saturation(rec, gates=gates))
        show(self.saturation, self.saturation_figure)
