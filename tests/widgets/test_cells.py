"""CellExplorer: controls set from Python change the outputs; bad input shows inside the widget."""

import pytest

from workbench.analysis.cells import planted_lstm
from workbench.widgets.cells import CellExplorer

TEXT = 'x = f(a, "b(", [c])\nif (y):\n    g("z")\n' * 3


@pytest.fixture()
def explorer():
    return CellExplorer({"planted": planted_lstm(), "planted-2": planted_lstm(n_layers=2, seed=3)},
                        TEXT)


def test_first_render_shows_a_heatmap_and_no_error(explorer):
    assert explorer.error.value == ""
    assert explorer.heatmap.value.count('class="wb-c"') == len(TEXT)
    assert explorer.saturation_figure is not None
    assert {t.name for t in explorer.saturation_figure.data if t.name} == {"layer 0"}


def test_changing_unit_quantity_and_mode_changes_the_outputs(explorer):
    before = explorer.heatmap.value
    explorer.unit_select.value = 2
    assert explorer.heatmap.value != before and "unit 2" in explorer.heatmap.value
    assert "position_in_line" in explorer.ranking.value.split("</tr>")[1]  # top row of the profile
    explorer.quantity_select.value = "f"
    assert "· f ·" in explorer.heatmap.value
    explorer.quantity_select.value = "c"
    explorer.mode_select.value = "top units for feature"
    explorer.feature_select.value = "in_string"
    assert "units ranked for in_string" in explorer.ranking.value
    first_row = explorer.ranking.value.split("<tbody>")[1].split("</tr>")[0]
    assert "<td>1</td>" in first_row  # planted quote cell is unit 1


def test_switching_model_updates_layers_and_saturation(explorer):
    explorer.model_select.value = "planted-2"
    assert list(explorer.layer_select.options) == [0, 1]
    explorer.layer_select.value = 1
    assert "layer 1" in explorer.heatmap.value and explorer.error.value == ""
    assert {t.name for t in explorer.saturation_figure.data if t.name} == {"layer 0", "layer 1"}


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("naïve", "not in the vocabulary"),
])
def test_bad_text_shows_a_message_inside_the_widget(explorer, text, message):
    explorer.text_input.value = text
    assert message in explorer.error.value
    assert explorer.heatmap.value == ""
    explorer.text_input.value = "ok(1)\n"  # and it recovers
    assert explorer.error.value == "" and explorer.heatmap.value


def test_a_text_over_the_limits_shows_the_limit():
    small = CellExplorer(planted_lstm(), "ab", max_chars=50, memory_budget_bytes=4000)
    small.text_input.value = "x" * 60
    assert "max_chars=50" in small.error.value
    small.text_input.value = "x" * 40
    assert "memory budget" in small.error.value
