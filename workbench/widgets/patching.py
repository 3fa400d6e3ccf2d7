"""`PatchingExplorer`: an ipywidgets front end to `workbench.analysis.patching` (activation patching;
Meng et al. 2022, Heimersheim & Nanda 2024).

Type a clean and a corrupted text of equal token length, pick a metric (the logit difference between
two tokens, or one token's probability, read at the last position) and a hook (the residual stream
or the layer's carried state), and press Run: the layer × position sweep is drawn as a heatmap.
Clicking a cell shows that single patched run's top next tokens at the metric position. Every error
(unequal lengths, an answer that is not one token, identical texts) is shown inside the widget; the
kernel keeps running.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from workbench.analysis.patching import (
    Metric,
    Pair,
    activation_patching,
    logit_difference,
    patched_logits,
    patching_heatmap,
    target_probability,
    top_predictions,
)
from workbench.models.protocol import carried_state
from workbench.widgets.display import BusyState, error_html
from workbench.widgets.explorer import Explorer, clear, show

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["METRICS", "PatchingExplorer"]

LOGIT_DIFFERENCE = "logit difference"
TARGET_PROBABILITY = "target probability"
METRICS = (LOGIT_DIFFERENCE, TARGET_PROBABILITY)
RUN_LABEL = "Run"


def _cell_label(position: int, token: str) -> str:
    """A unique x label per position: 3:a."""
    return f"{position}:{token}"


class PatchingExplorer(Explorer):
    """A clean/corrupted activation-patching sweep for one model (or a dict), with click-to-inspect.

    `explorer.widget` is the box to display (the explorer also displays itself). Pressing Run (or
    `update()`) recomputes: `pair`, `metric`, `table` (activation_patching's tidy table) and
    `heatmap` (a plotly FigureWidget, clickable, where plotly can make one: it needs `anywidget`;
    else a static Figure). `on_cell_click` is its click callback; `select(layer, position)` (what it
    calls) sets `selection` and `prediction`, the top-k next tokens at the metric
    position of the corrupted run with that one cell patched in from the clean run (denoising).
    """

    def __init__(
        self, models: HookedModel | Mapping[str, HookedModel], clean: str = "", corrupted: str = "", *,
        metric: str = LOGIT_DIFFERENCE, answer: str = "", other: str = "", hook: str = "resid_post",
        k: int = 5, max_chars: int | None = 256, unknown: str | None = None, run: bool = True,
    ):
        super().__init__(models, max_chars=max_chars, unknown=unknown)
        if metric not in METRICS:
            raise KeyError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        self.k = k
        self.pair: Pair | None = None
        self.metric: Metric | None = None
        self.table: pd.DataFrame | None = None
        self.heatmap: Any = None
        self.labels: list[str] = []
        self.selection: tuple[int, int] | None = None
        self.prediction: pd.DataFrame | None = None
        style = {"description_width": "initial"}
        self.clean_input = widgets.Text(value=clean, description="clean", continuous_update=False,
                                        layout={"width": "49%"})
        self.corrupted_input = widgets.Text(value=corrupted, description="corrupted", continuous_update=False,
                                            layout={"width": "49%"})
        self.metric_select = widgets.Dropdown(options=list(METRICS), value=metric, description="metric",
                                              style=style)
        self.answer_input = widgets.Text(value=answer, description="answer", continuous_update=False,
                                         layout={"width": "160px"})
        self.other_input = widgets.Text(value=other, description="vs", continuous_update=False,
                                        layout={"width": "160px"})
        self.hook_select = widgets.Dropdown(description="hook", style=style)
        self.run_button = widgets.Button(description=RUN_LABEL, button_style="primary")
        self.busy = BusyState([self.model_select, self.clean_input, self.corrupted_input, self.metric_select,
                               self.answer_input, self.other_input, self.hook_select, self.run_button])
        self.info = widgets.HTML(value="")
        self.heatmap_output = widgets.Output()
        self.prediction_html = widgets.HTML(value="")
        self._initial_hook = hook
        self._sync_model_controls()
        self.metric_select.observe(lambda _c: self._sync_metric(), names="value")
        self._sync_metric()
        self.run_button.on_click(lambda _b: self.update())
        self._run = run
        self._assemble(
            [widgets.HBox([self.model_select, self.hook_select]),
             widgets.HBox([self.clean_input, self.corrupted_input]),
             widgets.HBox([self.metric_select, self.answer_input, self.other_input, self.run_button])],
            [self.info, self.heatmap_output, self.prediction_html],
            [],
        )

    # ----------------------------------------------------------------------------- state
    def _sync_model_controls(self) -> None:
        options = [("resid_post", "resid_post")]
        try:
            state = carried_state(self.model, 0)
        except ValueError:  # a family that hooks no carried state per position
            pass
        else:
            options.append((f"state ({state})", state))
        names = [value for _, value in options]
        current = self.hook_select.value
        wanted = next((h for h in (current, self._initial_hook) if h in names), "resid_post")
        with self._quiet():
            self.hook_select.options = options
            self.hook_select.value = wanted

    def _sync_metric(self) -> None:
        self.other_input.layout.display = None if self.metric_select.value == LOGIT_DIFFERENCE else "none"

    def update(self) -> None:
        if not getattr(self, "_run", True):  # the first render waits for Run when run=False
            self._run = True
            return
        super().update()

    # ----------------------------------------------------------------------------- inputs
    def _token(self, text: str, what: str) -> int:
        if not text:
            raise ValueError(f"type the {what} token")
        ids = self.model.to_tokens(text)  # [1, pos]
        if ids.shape[-1] != 1:
            raise ValueError(f"the {what} {text!r} is {ids.shape[-1]} tokens; type exactly one token")
        return int(ids[0, 0])

    def _make_pair(self) -> Pair:
        clean, corrupted = self.clean_input.value, self.corrupted_input.value
        for what, text in (("clean", clean), ("corrupted", corrupted)):
            if not text:
                raise ValueError(f"the {what} text is empty: type at least one character")
        clean, corrupted = self._read_text(clean), self._read_text(corrupted)
        if clean == corrupted:
            raise ValueError("the clean and corrupted texts are identical: change at least one token")
        a, b = self.model.to_tokens(clean), self.model.to_tokens(corrupted)  # [1, pos] each
        if a.shape != b.shape:
            raise ValueError(
                f"the clean text is {a.shape[-1]} tokens and the corrupted text {b.shape[-1]}: patching "
                "needs texts of equal token length"
            )
        return Pair(a, b)

    def _make_metric(self) -> Metric:
        answer = self._token(self.answer_input.value, "answer")
        if self.metric_select.value == TARGET_PROBABILITY:
            return target_probability(answer)
        other = self._token(self.other_input.value, "other (vs)")
        if other == answer:
            raise ValueError("the answer and the other token are the same: a logit difference needs two")
        return logit_difference(answer, other)

    # ----------------------------------------------------------------------------- update
    def _clear(self) -> None:
        self.info.value = self.prediction_html.value = ""
        self.table = self.heatmap = self.prediction = self.selection = None
        clear(self.heatmap_output)

    def _compute(self) -> None:
        model = self.model
        self.pair, self.metric = self._make_pair(), self._make_metric()
        hook = str(self.hook_select.value)
        self.table = activation_patching(model, self.pair, self.metric, hooks=hook)
        tokens = model.to_str_tokens(self.pair.clean)
        self.labels = [_cell_label(i, t) for i, t in enumerate(tokens)]
        attrs = self.table.attrs
        self.info.value = (
            f"<small>metric <code>{html.escape(repr(self.metric))}</code>: clean "
            f"{attrs['clean_metric']:.4g}, corrupted {attrs['corrupted_metric']:.4g}; each cell patches "
            f"<code>{html.escape(hook)}</code> at one layer and position from the clean run into the "
            "corrupted run (denoising). Click a cell to see that run's prediction.</small>"
        )
        figure = patching_heatmap(self.table, labels=self.labels,
                                  title=f"activation patching of {hook}: normalized effect")
        self.heatmap = _as_figure_widget(figure, self.on_cell_click)
        show(self.heatmap_output, self.heatmap)
        best = self.table.loc[self.table["normalized_effect"].abs().fillna(0).idxmax()]
        self._select(int(best["layer"]), int(best["position"]))

    def select(self, layer: int, position: int) -> None:
        """Show the top-k prediction of the corrupted run with (layer, position) patched from clean."""
        try:
            with self.busy():
                self._select(layer, position)
        except Exception as exc:
            self.error.value = error_html(exc)
        else:
            self.error.value = ""

    def _select(self, layer: int, position: int) -> None:
        if self.pair is None or self.table is None:
            raise ValueError("press Run first: there is no patching sweep to inspect")
        hook = str(self.hook_select.value)
        n = len(self.model.blocks)
        length = self.pair.clean.shape[-1]
        if not 0 <= layer < n or not 0 <= position < length:
            raise IndexError(f"cell (layer {layer}, position {position}) is outside the {n} x {length} sweep")
        logits = patched_logits(self.model, self.pair, hook, positions=[position], layer=layer)  # [1, pos, v]
        self.selection = (layer, position)
        self.prediction = top_predictions(self.model, logits[0, -1], self.k)
        row = self.table[(self.table.layer == layer) & (self.table.position == position)]
        effect = float(row["normalized_effect"].iloc[0]) if len(row) else float("nan")
        self.prediction_html.value = (
            f"<b>patched: layer {layer}, position {html.escape(self.labels[position])}</b> "
            f"(normalized effect {effect:.3g}); next token at the last position:"
            + self.prediction[["rank", "token", "prob"]].to_html(index=False, float_format="%.3f", escape=True)
        )

    def on_cell_click(self, trace: Any, points: Any, _state: Any) -> None:
        """FigureWidget click on a heatmap cell: show that patched run's prediction."""
        if points.xs and points.ys:
            self.select(int(points.ys[0]), int(str(points.xs[0]).split(":", 1)[0]))


def _as_figure_widget(figure: Any, on_click: Any) -> Any:
    """A FigureWidget with click handling where plotly can make one (it needs anywidget), else the figure."""
    try:
        import plotly.graph_objects as go

        widget = go.FigureWidget(figure)
    except (ImportError, ValueError):
        return figure
    for trace in widget.data:
        trace.on_click(on_click)
    return widget
