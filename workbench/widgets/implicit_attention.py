"""`ImplicitAttentionExplorer`: an ipywidgets front end to `workbench.analysis.implicit_attention`.

Choose model, layer, mode (exact / paper), channel aggregation (or one channel), a query position,
and edit the text: the L×L map (Zimerman et al. 2024; Ali et al. 2024) and the query's row drawn
over the text update. Every error (empty text, unknown characters, a text over the length limit or
the memory budget, a family without a form) is shown inside the widget; the kernel keeps running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from workbench.analysis.implicit_attention import channel_count, family_of, implicit_attention
from workbench.analysis.implicit_attention.figures import map_figure, row_heatmap
from workbench.analysis.tokens import tokenize
from workbench.widgets.display import BusyState
from workbench.widgets.explorer import Explorer, clear, show

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["ImplicitAttentionExplorer"]

DEFAULT_TEXT = "def area(w, h):\n    return max(0, w) * (h + 1)\n"
AGGREGATES = ("mean", "abs_mean", "norm", "channel")


class ImplicitAttentionExplorer(Explorer):
    """Map heatmap and query row for one model (or a dict of named models).

    `explorer.widget` is the box to display (the explorer also displays itself); setting any
    control's value recomputes. `max_chars` and `memory_budget_bytes` guard the computation.
    """

    def __init__(self, models: HookedModel | Mapping[str, HookedModel], text: str = DEFAULT_TEXT, *,
                 tokenizer: Any = None, max_chars: int = 400, unknown: str | None = None,
                 memory_budget_bytes: int | None = None):
        super().__init__(models, max_chars=max_chars, unknown=unknown)
        self.tokenizer, self.memory_budget_bytes = tokenizer, memory_budget_bytes
        self.attention: Any = None
        self.map_figure: Any = None
        style = {"description_width": "initial"}
        self.layer_select = widgets.IntSlider(value=0, min=0, max=0, description="layer",
                                              continuous_update=False)
        self.mode_select = widgets.ToggleButtons(options=["exact"], value="exact", style=style)
        self.aggregate_select = widgets.Dropdown(options=AGGREGATES, value="mean",
                                                 description="channels", style=style)
        self.channel_select = widgets.IntSlider(value=0, min=0, max=0, description="channel",
                                                continuous_update=False)
        self.query_select = widgets.IntSlider(value=0, min=0, max=0, description="query",
                                              continuous_update=False)
        self.text_input = widgets.Textarea(value=text, continuous_update=False,
                                           layout={"width": "100%", "height": "90px"})
        self.busy = BusyState([self.model_select, self.layer_select, self.mode_select, self.aggregate_select,
                               self.channel_select, self.query_select, self.text_input])
        self.heatmap = widgets.Output()
        self.row = widgets.HTML(value="")
        self._sync_model_controls()
        self._assemble(
            [widgets.HBox([self.model_select, self.layer_select, self.mode_select]),
             widgets.HBox([self.aggregate_select, self.channel_select, self.query_select]), self.text_input],
            [self.row, self.heatmap],
            [self.layer_select, self.mode_select, self.aggregate_select, self.channel_select, self.query_select,
             self.text_input],
        )

    def _sync_model_controls(self) -> None:
        model = self.model
        with self._quiet():
            self.layer_select.max = len(model.blocks) - 1
            self.layer_select.value = min(self.layer_select.value, self.layer_select.max)
            try:
                modes, channels = list(family_of(model).modes), channel_count(model)
            except NotImplementedError:
                modes, channels = ["exact"], model.cfg.d_hidden
            self.mode_select.options = modes
            self.mode_select.value = "exact"
            self.channel_select.max = channels - 1
            self.channel_select.value = min(self.channel_select.value, self.channel_select.max)

    def _clear(self) -> None:
        self.row.value = ""
        clear(self.heatmap)
        self.map_figure = None

    def _compute(self) -> None:
        text = self._read_text(self.text_input.value)
        model = self.model
        tokens = tokenize(model, text, self.tokenizer)[None]  # [1, pos]
        with self._quiet():
            self.query_select.max = len(text) - 1
            if self.query_select.value > self.query_select.max or self.query_select.value == 0:
                self.query_select.value = self.query_select.max
        aggregate = self.aggregate_select.value
        channel = int(self.channel_select.value) if aggregate == "channel" else None
        self.attention = implicit_attention(
            model, tokens, int(self.layer_select.value), mode=self.mode_select.value,
            channels=None if channel is None else [channel],
            aggregate="none" if channel is not None else aggregate,
            memory_budget_bytes=self.memory_budget_bytes,
        )
        query = int(self.query_select.value)
        maps = self.attention.maps[0]
        row = maps[0, query] if channel is not None else maps[query]  # [key]
        label = f"channel {channel}" if channel is not None else aggregate
        self.row.value = row_heatmap(
            text, row, query,
            title=f"layer {self.attention.layer} {self.attention.mode} ({label}): what query {query} "
                  f"({text[query]!r}) reads",
        ).html
        self.map_figure = map_figure(self.attention, list(text), channel=0 if channel is not None else None)
        show(self.heatmap, self.map_figure)
