"""SteeringExplorer: controls set from Python change the outputs; bad input shows inside it."""

import pytest

from workbench.analysis.steering import planted_steering_lstm
from workbench.widgets.steering import CUSTOM, SteeringExplorer


@pytest.fixture(scope="module")
def explorer():
    models = {"planted": planted_steering_lstm(), "planted-2": planted_steering_lstm(n_layers=2)}
    return SteeringExplorer(models, behaviour="comment", prompt="x = 1", max_new_tokens=12)


def test_first_render_shows_both_generations_and_the_sweep(explorer):
    assert explorer.error.value == ""
    assert "unsteered" in explorer.generations.value and "steered (× 0.5)" in explorer.generations.value
    assert explorer.vector.hook == "blocks.0.hook_resid_post"
    assert explorer.sweep.is_monotonic()
    assert explorer.sweep_figure is not None


def test_multiplier_hook_and_model_controls_recompute(explorer):
    explorer.multiplier_slider.value = 2.0
    assert "steered (× 2)" in explorer.generations.value
    assert explorer.steered_text.count("#") > explorer.unsteered_text.count("#")  # '#' now wins
    explorer.hook_select.value = "c"
    assert explorer.vector.hook == "blocks.0.mixer.hook_c" and explorer.error.value == ""
    explorer.apply_select.value = "once, at the last prompt token"
    assert explorer.error.value == ""
    explorer.model_select.value = "planted-2"
    assert list(explorer.layer_select.options) == [0, 1] and explorer.error.value == ""


@pytest.mark.parametrize("values, message", [
    ({"negative_input": "x = 1  + a"}, "as many positive as negative"),
    ({"positive_input": ""}, "no positive texts"),
    ({"negative_input": "naive", "positive_input": "naïve"}, "not in the vocabulary"),
    ({"prompt_input": ""}, "prompt is empty"),
])
def test_bad_input_shows_a_message_inside_the_widget(values, message):
    ex = SteeringExplorer(planted_steering_lstm(), behaviour="comment", prompt="x", max_new_tokens=4)
    ex.behaviour_select.value = CUSTOM
    for field, value in values.items():
        getattr(ex, field).value = value
    assert message in ex.error.value
    assert ex.generations.value == ""
    ex.behaviour_select.value = "comment"  # and it recovers
    ex.prompt_input.value = "x = 1"
    assert ex.error.value == "" and ex.generations.value
