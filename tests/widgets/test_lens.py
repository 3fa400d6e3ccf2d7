"""LensExplorer: controls set from Python change the outputs; bad input shows inside the widget."""

import html

import numpy as np
import pytest

from workbench.analysis.lens import TunedLens
from workbench.analysis.planted import planted_affine_lm
from workbench.widgets.lens import LensExplorer

TEXT = "for i in range(3):\n    print(i)\n"


@pytest.fixture(scope="module")
def models():
    a, b = planted_affine_lm(n_layers=3, seed=0), planted_affine_lm(n_layers=2, seed=1)
    lens = TunedLens.from_model(a).fit("abc(d) e\n" * 300, steps=5, batch_size=2, seq_len=32, progress=False)
    return a, b, lens


@pytest.fixture()
def explorer(models):
    a, b, lens = models
    return LensExplorer({"three": a, "two": b}, [lens], TEXT)


def test_first_render_shows_the_trajectory_and_the_top_k(explorer):
    assert explorer.error.value == ""
    assert explorer.lens_select.options == ("logit lens", "tuned lens (unnamed-gru-3x8)")
    assert explorer.lens_select.value.startswith("tuned lens")
    heat = explorer.trajectory_figure.data[0]
    assert len(heat.z) == 4 and len(heat.z[0]) == len(TEXT)
    assert "<b>layer 1, position 0</b>" in explorer.top_k_table.value
    assert explorer.top_k_figure is not None and explorer.layers_figure is not None


def test_sliders_move_the_selection_and_the_top_k_follows(explorer):
    explorer.position_slider.value = 5
    explorer.layer_slider.value = "embed"
    assert explorer.selection == ("embed", 5)
    expected = explorer.trajectory.top_k("embed", 5, explorer.k)
    assert "<b>layer embed, position 5</b>" in explorer.top_k_table.value
    assert f"<td>{html.escape(expected.token.iloc[0])}</td>" in explorer.top_k_table.value
    assert explorer.trajectory_figure.layout.shapes[0].x0 == 4.5  # the outline moved
    explorer.select(2, 7)  # what a click on a cell does
    assert (explorer.layer_slider.value, explorer.position_slider.value) == ("2", 7)
    assert "<b>layer 2, position 7</b>" in explorer.top_k_table.value


def test_switching_statistic_lens_and_model(explorer):
    before = np.asarray(explorer.trajectory_figure.data[0].z)
    explorer.statistic_select.value = "kl"
    assert not np.allclose(np.asarray(explorer.trajectory_figure.data[0].z), before)
    assert "KL" in explorer.trajectory_figure.layout.title.text
    explorer.lens_select.value = "logit lens"
    assert "logit lens" in explorer.trajectory_figure.layout.title.text
    explorer.model_select.value = "two"  # the tuned lens belongs to the other model
    assert explorer.lens_select.options == ("logit lens",)
    assert list(explorer.layer_slider.options) == ["embed", "0", "1"]
    assert len(explorer.trajectory_figure.data[0].z) == 3 and explorer.error.value == ""


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("naïve", "not in the vocabulary"),
])
def test_bad_text_shows_a_message_inside_the_widget(explorer, text, message):
    explorer.text_input.value = text
    assert message in explorer.error.value
    assert explorer.trajectory is None and explorer.top_k_table.value == ""
    explorer.text_input.value = "ok(1)\n"  # and it recovers
    assert explorer.error.value == "" and explorer.trajectory.n_positions == 6
    assert explorer.position_slider.max == 5


def test_a_text_over_the_limits_shows_the_limit(models):
    small = LensExplorer(models[0], text="ab", max_chars=50, memory_budget_bytes=20_000)
    small.text_input.value = "x" * 60
    assert "max_chars=50" in small.error.value
    small.text_input.value = "x" * 40
    assert "memory budget" in small.error.value
