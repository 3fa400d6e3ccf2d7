"""`SteeringExplorer`: an ipywidgets front end to `workbench.analysis.steering` (contrastive
activation addition, Rimsky et al. 2024; state steering, Paulo, Marshall & Belrose 2024).

Pick a built-in behaviour or type contrastive pairs, pick hook, layer and multiplier, and see the
unsteered and steered generations side by side with the multiplier sweep. Every error (empty or
unpaired texts, unknown characters, a vector that fits another model) is shown inside the widget;
the kernel keeps running.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from workbench.analysis.steering import (
    BEHAVIOURS,
    Steer,
    SteeringSweep,
    SteeringVector,
    contrastive_vector,
    generate_steered,
    multiplier_sweep,
)
from workbench.analysis.steering.figures import sweep_figure
from workbench.widgets.display import BusyState
from workbench.widgets.explorer import Explorer, clear, show

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["SteeringExplorer"]

CUSTOM = "custom pairs"
APPLY = {"every position": "all", "once, at the last prompt token": -1}
NEUTRAL_TEXT = (
    "def read_config(path):\n    with open(path) as f:\n        lines = f.readlines()\n"
    "    return [line.strip() for line in lines if line.strip()]\n"
)


def _lines(text: str) -> list[str]:
    """One text per line, with `\\n` and `\\t` typed as escapes; blank lines are skipped."""
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in text.splitlines() if line.strip()]


def _escaped(texts: tuple[str, ...]) -> str:
    return "\n".join(t.replace("\n", "\\n").replace("\t", "\\t") for t in texts)


class SteeringExplorer(Explorer):
    """Steered vs unsteered generation and the multiplier sweep for one model (or a dict).

    `explorer.widget` is the box to display (the explorer also displays itself). `update()`
    recomputes; setting any control's value calls it. The multiplier is in units of the hook's
    typical activation norm, so hooks compare at equal norm.
    """

    def __init__(
        self, models: HookedModel | Mapping[str, HookedModel], behaviour: str = "open_quote", *,
        prompt: str = "def main(argv):\n    ",
        max_new_tokens: int = 60, sweep_multipliers: tuple[float, ...] = (-1, -0.5, -0.25, 0, 0.25, 0.5, 1),
    ):
        super().__init__(models)
        if behaviour not in BEHAVIOURS and behaviour != CUSTOM:
            raise KeyError(f"unknown behaviour {behaviour!r}; built-in: {', '.join(BEHAVIOURS)}")
        self.sweep_multipliers = sweep_multipliers
        self.vector: SteeringVector | None = None
        self.sweep: SteeringSweep | None = None
        self.sweep_figure: Any = None
        self.unsteered_text = self.steered_text = ""
        style = {"description_width": "initial"}
        self.behaviour_select = widgets.Dropdown(options=[*BEHAVIOURS, CUSTOM], value=behaviour,
                                                 description="behaviour", style=style)
        self.positive_input = widgets.Textarea(description="positive", continuous_update=False,
                                               layout={"width": "49%", "height": "110px"})
        self.negative_input = widgets.Textarea(description="negative", continuous_update=False,
                                               layout={"width": "49%", "height": "110px"})
        self.targets_input = widgets.Text(description="targets", continuous_update=False, style=style)
        self.hook_select = widgets.Dropdown(description="hook", style=style)
        self.layer_select = widgets.Dropdown(description="layer", style=style)
        self.position_select = widgets.Dropdown(options=["mean", "last", "all"], value="mean",
                                                description="read at", style=style)
        self.apply_select = widgets.Dropdown(options=list(APPLY), value="every position",
                                             description="add", style=style)
        self.multiplier_slider = widgets.FloatSlider(value=0.5, min=-2.0, max=2.0, step=0.05,
                                                     description="multiplier", continuous_update=False,
                                                     style=style)
        self.prompt_input = widgets.Textarea(value=prompt, description="prompt", continuous_update=False,
                                             layout={"width": "100%", "height": "60px"})
        self.tokens_slider = widgets.IntSlider(value=max_new_tokens, min=1, max=300,
                                               description="new tokens", continuous_update=False)
        self.greedy_check = widgets.Checkbox(value=False, description="greedy")
        self.seed_input = widgets.IntText(value=0, description="seed", layout={"width": "140px"})
        self.busy = BusyState([self.model_select, self.behaviour_select, self.positive_input, self.negative_input,
                               self.targets_input, self.hook_select, self.layer_select, self.position_select,
                               self.apply_select, self.multiplier_slider, self.prompt_input, self.tokens_slider,
                               self.greedy_check, self.seed_input])
        self.info = widgets.HTML(value="")
        self.generations = widgets.HTML(value="")
        self.sweep_output = widgets.Output()
        self._sync_model_controls()
        self._fill_behaviour()
        self.behaviour_select.observe(self._on_behaviour, names="value")
        self._assemble(
            [widgets.HBox([self.model_select, self.behaviour_select, self.targets_input]),
             widgets.HBox([self.positive_input, self.negative_input]),
             widgets.HBox([self.hook_select, self.layer_select, self.position_select, self.apply_select]),
             widgets.HBox([self.multiplier_slider, self.tokens_slider, self.greedy_check, self.seed_input]),
             self.prompt_input],
            [self.info, self.generations, self.sweep_output],
            [self.positive_input, self.negative_input, self.targets_input, self.hook_select, self.layer_select,
             self.position_select, self.apply_select, self.multiplier_slider, self.prompt_input,
             self.tokens_slider, self.greedy_check, self.seed_input],
        )

    # ----------------------------------------------------------------------------- state
    def _sync_model_controls(self) -> None:
        model = self.model
        layer = len(model.blocks) // 2
        hooks = ["resid_post", "resid_pre", *reversed(model.state_quantities(layer))]  # the carried state first
        with self._quiet():
            self.hook_select.options = hooks
            self.hook_select.value = "resid_post"
            self.layer_select.options = list(range(len(model.blocks)))
            self.layer_select.value = layer

    def _fill_behaviour(self) -> None:
        name = self.behaviour_select.value
        if name == CUSTOM:
            return
        b = BEHAVIOURS[name]
        with self._quiet():
            self.positive_input.value = _escaped(b.positive)
            self.negative_input.value = _escaped(b.negative)
            self.targets_input.value = b.targets
            self.position_select.value = b.position

    def _on_behaviour(self, _change: Any) -> None:
        self._fill_behaviour()
        self.update()

    # ----------------------------------------------------------------------------- update
    def _clear(self) -> None:
        self.generations.value = self.info.value = ""
        clear(self.sweep_output)

    def _compute(self) -> None:
        model = self.model
        positive, negative = _lines(self.positive_input.value), _lines(self.negative_input.value)
        self.vector = contrastive_vector(
            model, positive, negative, str(self.hook_select.value), layer=int(self.layer_select.value),
            position=self.position_select.value, label=f"{self.behaviour_select.value}",
        )
        v = self.vector
        positions = APPLY[self.apply_select.value]
        steer = Steer(v, float(self.multiplier_slider.value), positions, relative=True)
        prompt = self.prompt_input.value
        if not prompt:
            raise ValueError("the prompt is empty: type at least one character")
        kwargs = {"greedy": bool(self.greedy_check.value), "seed": int(self.seed_input.value)}
        n = int(self.tokens_slider.value)
        self.unsteered_text = str(generate_steered(model, prompt, [], n, **kwargs))
        self.steered_text = str(generate_steered(model, prompt, steer, n, **kwargs))
        cos = "–" if v.pair_cosines is None else f"{float(v.pair_cosines.mean()):.2f}"
        self.info.value = (
            f"<small>vector at <code>{html.escape(v.hook)}</code>: {len(positive)} positive, "
            f"{len(negative)} negative texts; |v| = {v.norm:.3g}, typical |activation| = "
            f"{v.reference_norm:.3g}; mean pair cosine {cos}; separation {v.separation:.2f} s.d.</small>"
        )
        self.generations.value = self._side_by_side(prompt)
        self._draw_sweep(v, positions, prompt)

    def _side_by_side(self, prompt: str) -> str:
        def column(title: str, text: str) -> str:
            new = text[len(prompt):]
            return (
                f'<div style="flex:1;min-width:0"><b>{html.escape(title)}</b>'
                '<pre style="white-space:pre-wrap;background:#f7f7f7;padding:6px;margin:2px">'
                f'<span style="color:#888">{html.escape(prompt)}</span>{html.escape(new)}</pre></div>'
            )

        m = float(self.multiplier_slider.value)
        return (
            '<div style="display:flex;gap:8px">' + column("unsteered", self.unsteered_text)
            + column(f"steered (× {m:g})", self.steered_text) + "</div>"
        )

    def _draw_sweep(self, v: SteeringVector, positions: Any, prompt: str) -> None:
        name = self.behaviour_select.value
        targets = self.targets_input.value
        prompts = list(BEHAVIOURS[name].prompts) if name in BEHAVIOURS else [prompt]
        if not targets:
            self.sweep, self.sweep_figure = None, None
            show(self.sweep_output, "type target characters to sweep the multiplier")
            return
        self.sweep = multiplier_sweep(self.model, v, self.sweep_multipliers, prompts, targets,
                                      neutral_text=NEUTRAL_TEXT, positions=positions, relative=True,
                                      label=f"{name} @ {v.hook}")
        self.sweep_figure = sweep_figure(self.sweep, behaviour_name=f"p(next in {targets!r})")
        show(self.sweep_output, self.sweep_figure)
