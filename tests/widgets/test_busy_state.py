"""The busy state every explorer shows while it computes (workbench.widgets.display.BusyState), and
that an error shows inside the widget and leaves it working.

Each explorer test wraps the explorer's own compute step with a spy that calls the real step and
records what the widget showed at that moment (controls disabled, the status line's spinner), then
checks that everything is back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pytest
import torch

from workbench.widgets.display import BUSY_ICON, BUSY_MESSAGE, BusyState

# ------------------------------------------------------------------------------- BusyState itself


def test_busy_state_disables_controls_and_shows_a_spinner_then_restores_them():
    button = widgets.Button(description="run", icon="play")
    slider = widgets.IntSlider()
    locked = widgets.Text(disabled=True)  # disabled before: stays disabled after
    busy = BusyState([button, slider, locked])
    with busy():
        assert button.disabled and slider.disabled and locked.disabled
        assert button.description == BUSY_MESSAGE and button.icon == BUSY_ICON
        assert "wb-spinner" in busy.status.value and BUSY_MESSAGE in busy.status.value
        assert busy.active
    assert not button.disabled and not slider.disabled and locked.disabled
    assert button.description == "run" and button.icon == "play"
    assert "done in" in busy.status.value and "wb-spinner" not in busy.status.value
    assert not busy.active and busy.seconds is not None and busy.seconds >= 0


def test_busy_state_restores_the_controls_when_the_computation_fails():
    button = widgets.Button(description="run")
    busy = BusyState([button])
    with pytest.raises(ZeroDivisionError), busy("searching…"):
        assert button.description == "searching…"
        _ = 1 / 0
    assert not button.disabled and button.description == "run"
    assert "failed after" in busy.status.value


def test_a_nested_busy_block_leaves_the_outer_one_in_charge():
    slider = widgets.IntSlider()
    busy = BusyState([slider])
    with busy():
        with busy():
            pass
        assert slider.disabled and "wb-spinner" in busy.status.value  # still busy after the inner block
    assert not slider.disabled


# ------------------------------------------------------------------------------- every explorer


def spy_on(monkeypatch, obj: Any, method: str, busy: BusyState, controls: list[widgets.Widget]) -> list[dict]:
    """Wrap `obj.method` so each call records the widget's busy state, then runs the real method."""
    seen: list[dict] = []
    real: Callable = getattr(obj, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        seen.append({
            "disabled": [c.disabled for c in controls],
            "buttons": [c.description for c in controls if isinstance(c, widgets.Button)],
            "status": busy.status.value,
        })
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, method, wrapped)
    return seen


def assert_busy_then_idle(seen: list[dict], busy: BusyState, controls: list[widgets.Widget]) -> None:
    assert seen, "the compute step did not run"
    assert all(all(s["disabled"]) for s in seen), "a control stayed enabled while the widget computed"
    assert all(BUSY_MESSAGE in s["status"] or "searching" in s["status"] for s in seen)
    assert all("wb-spinner" in s["status"] for s in seen)
    assert not any(c.disabled for c in controls), "a control stayed disabled after the computation"
    assert "wb-spinner" not in busy.status.value and "done in" in busy.status.value


def tiny_model(family: str) -> Any:
    from workbench.analysis.tokens import printable_tokenizer
    from workbench.models import HookedRecurrentLM, RecurrentConfig

    tokenizer = printable_tokenizer()
    torch.manual_seed(0)
    model = HookedRecurrentLM(RecurrentConfig(family=family, n_layers=2, d_model=8, d_hidden=8,
                                              d_vocab=len(tokenizer.chars), d_state=4))
    model.tokenizer = tokenizer
    return model


def cells_explorer():
    from workbench.analysis.cells import planted_lstm
    from workbench.widgets.cells import CellExplorer

    e = CellExplorer(planted_lstm(), 'x = f(a, "b")\n' * 3)
    return e, "_compute", lambda: setattr(e.unit_select, "value", 2), e.text_input, "naïve", \
        lambda: "unit 2" in e.heatmap.value


def lens_explorer():
    from workbench.analysis.planted import planted_affine_lm
    from workbench.widgets.lens import LensExplorer

    e = LensExplorer(planted_affine_lm(n_layers=2, seed=0), text="for i in range(3):\n")
    return e, "_compute", lambda: setattr(e.statistic_select, "value", "kl"), e.text_input, "", \
        lambda: e.trajectory is not None and e.trajectory_figure is not None


def implicit_attention_explorer():
    from workbench.widgets.implicit_attention import ImplicitAttentionExplorer

    e = ImplicitAttentionExplorer(tiny_model("s6"), "x = f(a, [b])\n")
    return e, "_compute", lambda: setattr(e.layer_select, "value", 1), e.text_input, "naïve", \
        lambda: "layer 1" in e.map_figure.layout.title.text


def steering_explorer():
    from workbench.analysis.steering import planted_steering_lstm
    from workbench.widgets.steering import SteeringExplorer

    e = SteeringExplorer(planted_steering_lstm(), behaviour="comment", prompt="x = 1", max_new_tokens=8)
    return e, "_compute", lambda: setattr(e.multiplier_slider, "value", 1.0), e.prompt_input, "", \
        lambda: "steered (× 1)" in e.generations.value


EXPLORERS = {
    "cells": cells_explorer,
    "lens": lens_explorer,
    "implicit_attention": implicit_attention_explorer,
    "steering": steering_explorer,
}


@pytest.mark.parametrize("make", EXPLORERS.values(), ids=EXPLORERS.keys())
def test_explorer_is_busy_while_it_computes_and_idle_after(make, monkeypatch):
    explorer, step, change, _text, _bad, _shows = make()
    controls = explorer.busy.controls
    assert controls and "done in" in explorer.busy.status.value  # the first render went through it
    seen = spy_on(monkeypatch, explorer, step, explorer.busy, controls)
    change()
    assert_busy_then_idle(seen, explorer.busy, controls)
    assert explorer.error.value == ""


@pytest.mark.parametrize("make", EXPLORERS.values(), ids=EXPLORERS.keys())
def test_an_error_shows_inside_the_explorer_and_it_keeps_working(make):
    explorer, _step, change, text_control, bad, shows = make()
    good = text_control.value
    text_control.value = bad  # an empty text or a character outside the vocabulary
    assert "b00020" in explorer.error.value, "the error is not shown in the widget"
    assert not any(c.disabled for c in explorer.busy.controls), "a control stayed disabled after the error"
    assert "failed after" in explorer.busy.status.value
    text_control.value = good
    change()
    assert explorer.error.value == "" and shows(), "the explorer did not recover after the error"


def test_mips_explorer_is_busy_during_the_search_and_shows_errors_inside(monkeypatch):
    from workbench.analysis.mips import pipeline
    from workbench.widgets.mips import RUN_LABEL, MipsExplorer

    explorer = MipsExplorer("No_Such_Task", budget=600)  # a safety net: the step counts decide
    button = explorer.run_button
    explorer.run_button.click()
    assert "UnknownTaskError" in explorer.error.value
    assert not button.disabled and button.description == RUN_LABEL and "failed after" in explorer.busy.status.value

    explorer.task_select.value = "Bitwise_Not"  # solved by the smallest linear net in well under a second
    seen = spy_on(monkeypatch, pipeline, "solve_task", explorer.busy, explorer.busy.controls)
    button.click()
    assert seen and all(seen[0]["disabled"]) and seen[0]["buttons"] == ["searching…"]
    assert "wb-spinner" in seen[0]["status"]
    assert not button.disabled and button.description == RUN_LABEL
    assert explorer.error.value == "" and "def program" in explorer.program.value
    assert "verified" in explorer.summary.value


def test_mips_explorer_shows_a_network_trained_elsewhere_with_its_verified_program():
    from workbench.analysis.mips.rnn import RNNSpec
    from workbench.analysis.mips.training import train_rnn
    from workbench.widgets.mips import MipsExplorer

    trained = train_rnn("Bitwise_Not", RNNSpec("linear", 1, "linear", "scalar", "mse", 0, False), work_limit=600)
    explorer = MipsExplorer(trained=trained)
    assert explorer.task_select.value == "Bitwise_Not" and explorer.error.value == ""
    assert explorer.result.attempts == 1 and explorer.result.rnn == trained.spec.label()
    assert "def program" in explorer.program.value and "verified" in explorer.summary.value
    assert explorer.cloud_figure is not None and "done in" in explorer.busy.status.value
    with pytest.raises(ValueError, match="not both"):
        MipsExplorer(result=explorer.result, trained=trained)
