"""`LensExplorer`: an ipywidgets front end to `workbench.analysis.lens` (Belrose et al. 2023).

Pick a model, a lens (the logit lens, or any tuned lens trained for that model) and a text; see the
prediction trajectory (layer x position, colour = entropy, KL or cross-entropy) and the top-k next
characters at the selected layer and position. The selection follows the layer and position
sliders, and a click on a cell where plotly's FigureWidget is available (it needs `anywidget`).
Every error (empty text, unknown characters, a text over the limits) shows inside the widget.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from workbench.analysis.lens import (
    STATISTICS,
    LogitLens,
    PredictionTrajectory,
    prediction_trajectory,
)
from workbench.analysis.lens.figures import top_k_figure, top_k_layers_figure, trajectory_figure
from workbench.widgets.display import BusyState, error_html
from workbench.widgets.explorer import Explorer, clear, show

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["LensExplorer"]

DEFAULT_TEXT = "def mean(xs):\n    return sum(xs) / len(xs)\n"
LOGIT = "logit lens"


class LensExplorer(Explorer):
    """Trajectory and top-k views for one model (or a dict of named models) and its lenses.

    `lenses` are tuned (or state) lenses, a sequence or a dict name -> lens; each is offered for the
    models it was trained for, beside the logit lens. `explorer.widget` is the box to display. `select(layer,
    position)` moves the selection (as the sliders and a click do). `max_chars` and
    `memory_budget_bytes` guard the recording.
    """

    def __init__(
        self,
        models: HookedModel | Mapping[str, HookedModel],
        lenses: Sequence[Any] | Mapping[str, Any] | None = None,
        text: str = DEFAULT_TEXT,
        *,
        statistic: str = "entropy",
        k: int = 10,
        max_chars: int = 400, unknown: str | None = None,
        memory_budget_bytes: int | None = None,
    ):
        super().__init__(models, max_chars=max_chars, unknown=unknown)
        if lenses is None:
            lenses = {}
        self.lenses: dict[str, Any] = (
            dict(lenses)
            if isinstance(lenses, Mapping)
            else {_lens_name(lens, i): lens for i, lens in enumerate(lenses)}
        )
        if statistic not in STATISTICS:
            raise KeyError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
        self.k, self.memory_budget_bytes = k, memory_budget_bytes
        self.trajectory: PredictionTrajectory | None = None
        self.trajectory_figure: Any = None
        self.top_k_figure: Any = None
        self.layers_figure: Any = None
        self.lens_select = widgets.Dropdown(description="lens")
        self.statistic_select = widgets.ToggleButtons(
            options=list(STATISTICS), value=statistic, tooltips=list(STATISTICS.values())
        )
        self.text_input = widgets.Textarea(
            value=text, continuous_update=False, layout={"width": "100%", "height": "90px"}
        )
        self.layer_slider = widgets.SelectionSlider(
            options=["embed"], description="layer", continuous_update=False
        )
        self.position_slider = widgets.IntSlider(
            min=0, max=0, description="position", continuous_update=False, layout={"width": "60%"}
        )
        self.busy = BusyState([self.model_select, self.lens_select, self.statistic_select, self.text_input,
                               self.layer_slider, self.position_slider])
        self.top_k_table = widgets.HTML(value="")
        self.trajectory_output = widgets.Output()
        self.top_k_output = widgets.Output()
        self._sync_model_controls()
        for control in (self.layer_slider, self.position_slider):
            control.observe(lambda _change: self._update_selection(), names="value")
        self._assemble(
            [widgets.HBox([self.model_select, self.lens_select]), self.statistic_select, self.text_input],
            [self.trajectory_output, widgets.HBox([self.layer_slider, self.position_slider]),
             widgets.HBox([self.top_k_output, self.top_k_table])],
            [self.lens_select, self.statistic_select, self.text_input],
        )

    @property
    def lens(self) -> Any:
        name = self.lens_select.value
        return LogitLens(self.model) if name == LOGIT else self.lenses[name]

    @property
    def selection(self) -> tuple[Any, int]:
        """The selected (layer, position)."""
        return _parse_layer(self.layer_slider.value), int(self.position_slider.value)

    def lenses_for(self, model: HookedModel) -> list[str]:
        """Names of the lenses offered for `model`: the logit lens and the tuned lenses trained for it."""
        names = [LOGIT]
        for name, lens in self.lenses.items():
            try:
                lens.check_model(model)
            except ValueError:
                continue
            names.append(name)
        return names

    def _sync_model_controls(self) -> None:
        model = self.model
        with self._quiet():
            options = self.lenses_for(model)
            previous = self.lens_select.value
            self.lens_select.options = options
            self.lens_select.value = previous if previous in options else options[-1]
            layers = ["embed", *(str(i) for i in range(len(model.blocks)))]
            self.layer_slider.options = layers
            self.layer_slider.value = layers[-2] if len(layers) > 1 else layers[0]

    def select(self, layer: Any, position: int) -> None:
        """Select a cell: the sliders move and the top-k views follow."""
        with self._quiet():
            self.layer_slider.value = str(layer)
            self.position_slider.value = int(position)
        self._update_selection()

    # ----------------------------------------------------------------------------- update
    def _clear(self) -> None:
        self.trajectory = self.trajectory_figure = self.top_k_figure = self.layers_figure = None
        self.top_k_table.value = ""
        clear(self.trajectory_output, wait=True)
        clear(self.top_k_output, wait=True)

    def _compute(self) -> None:
        text = self._read_text(self.text_input.value)
        self.trajectory = prediction_trajectory(self.lens, text, memory_budget_bytes=self.memory_budget_bytes)
        with self._quiet():
            labels = self.trajectory.labels  # a state lens has no `embed` read-out
            if list(self.layer_slider.options) != labels:
                value = self.layer_slider.value
                self.layer_slider.options = labels
                self.layer_slider.value = value if value in labels else labels[max(0, len(labels) - 2)]
            self.position_slider.max = self.trajectory.n_positions - 1
            self.position_slider.value = min(self.position_slider.value, self.position_slider.max)
        self._draw_trajectory()
        self._draw_selection()

    def _update_selection(self) -> None:
        if self._updating or self.trajectory is None:
            return
        try:
            with self.busy():
                self._draw_selection()
                self._draw_trajectory()
        except Exception as exc:
            self.error.value = error_html(exc)
        else:
            self.error.value = ""

    def _draw_trajectory(self) -> None:
        trajectory = self.trajectory
        assert trajectory is not None
        figure = trajectory_figure(trajectory, str(self.statistic_select.value), selected=self.selection)
        figure = _as_figure_widget(figure, self._on_click)
        self.trajectory_figure = figure
        show(self.trajectory_output, figure, wait=True)

    def _draw_selection(self) -> None:
        trajectory = self.trajectory
        assert trajectory is not None
        layer, position = self.selection
        table = trajectory.top_k(layer, position, self.k)
        context = html.escape("".join(trajectory.str_tokens[max(0, position - 15) : position + 1]))
        self.top_k_table.value = (
            f"<b>layer {html.escape(str(layer))}, position {position}</b> (after …<code>{context}</code>)"
            + table[["rank", "token", "prob"]].to_html(index=False, float_format="%.3f", escape=True)
        )
        self.top_k_figure = top_k_figure(trajectory, layer, position, self.k)
        self.layers_figure = top_k_layers_figure(trajectory, position)
        show(self.top_k_output, self.top_k_figure, self.layers_figure, wait=True)

    def _on_click(self, trace: Any, points: Any, _state: Any) -> None:
        """FigureWidget click on a heatmap cell: select it."""
        if points.xs and points.ys:
            self.select(points.ys[0], int(points.xs[0]))


def _lens_name(lens: Any, i: int) -> str:
    return f"{lens.name} ({lens.model_name})" if i == 0 else f"{lens.name} {i + 1} ({lens.model_name})"


def _parse_layer(label: str) -> Any:
    return label if label == "embed" else int(label)


def _as_figure_widget(figure: Any, on_click: Any) -> Any:
    """A FigureWidget with click handling where plotly can make one (it needs anywidget), else the figure."""
    try:
        import plotly.graph_objects as go

        widget = go.FigureWidget(figure)
    except (ImportError, ValueError):
        return figure
    widget.data[0].on_click(on_click)
    return widget

