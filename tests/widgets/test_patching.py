"""PatchingExplorer: texts set from Python run the sweep, a click on a heatmap cell shows that patched
run's prediction (the same as a direct patched run), and bad input shows inside the widget.

The model is the planted comment LSTM: layer 0's cell c is 1 from a '#' to the next newline and
writes logit('#') = 5 at the last layer, so restoring the clean '#' restores the answer."""

from types import SimpleNamespace

import pytest
import torch

from workbench.analysis.patching import Pair, patched_logits, top_predictions
from workbench.analysis.planted import planted_steering_lstm
from workbench.widgets.patching import TARGET_PROBABILITY, PatchingExplorer

CLEAN, CORRUPTED = "# ab", "x ab"


@pytest.fixture(scope="module")
def models():
    return {"two": planted_steering_lstm(n_layers=2), "one": planted_steering_lstm(n_layers=1)}


@pytest.fixture()
def explorer(models):
    return PatchingExplorer(models, CLEAN, CORRUPTED, answer="#", other="a", hook="c")


def test_run_draws_the_sweep_as_a_clickable_heatmap(explorer):
    assert explorer.error.value == ""
    df = explorer.table
    assert len(df) == 2 * len(CLEAN) and set(df.hook) == {"c"}
    assert df.attrs["clean_metric"] == pytest.approx(5.0, abs=1e-3)
    assert df.attrs["corrupted_metric"] == pytest.approx(0.0, abs=1e-3)
    # the planted cell: c at layer 0 restores the answer from the last position back to the '#'
    last = df[(df.layer == 0) & (df.position == len(CLEAN) - 1)]
    assert float(last.normalized_effect.iloc[0]) == pytest.approx(1.0, abs=1e-3)
    try:  # a FigureWidget (clickable) where plotly can make one: it needs anywidget
        import anywidget  # noqa: F401
    except ImportError:
        pass
    else:
        import plotly.graph_objects as go

        assert isinstance(explorer.heatmap, go.FigureWidget)
        assert explorer.heatmap.data[0]._click_callbacks  # wired to on_cell_click
    assert list(explorer.heatmap.data[0].x) == ["0:#", "1:␣", "2:a", "3:b"]
    assert explorer.selection is not None and "patched: layer" in explorer.prediction_html.value


@pytest.mark.parametrize("layer, position", [(0, 3), (1, 0), (0, 0)])
def test_a_click_shows_the_prediction_of_that_single_patched_run(explorer, models, layer, position):
    heat = explorer.heatmap.data[0]
    points = SimpleNamespace(xs=[heat.x[position]], ys=[str(layer)], point_inds=[[layer, position]])
    explorer.on_cell_click(heat, points, None)  # what the FigureWidget calls on a click
    assert explorer.error.value == "" and explorer.selection == (layer, position)
    model = models["two"]
    pair = Pair(model.to_tokens(CLEAN), model.to_tokens(CORRUPTED))
    direct = patched_logits(model, pair, "c", positions=[position], layer=layer)[0, -1]
    expected = top_predictions(model, direct, explorer.k)
    assert explorer.prediction["token"].tolist() == expected["token"].tolist()
    assert explorer.prediction["prob"].tolist() == pytest.approx(expected["prob"].tolist())
    shown = explorer.prediction_html.value
    assert f"layer {layer}, position {position}:" in shown


def test_the_clicked_prediction_follows_the_planted_cell(explorer):
    explorer.select(0, 3)  # c restored at the last position: '#' is predicted with logit 5
    assert explorer.prediction["token"].iloc[0] == "#" and explorer.prediction["prob"].iloc[0] > 0.5
    explorer.select(1, 0)  # layer 1's (unplanted) c at the '#': the comment cell stays off, all logits 0
    assert explorer.prediction["prob"].tolist() == pytest.approx([explorer.prediction["prob"].iloc[-1]] * explorer.k)


def test_hook_metric_and_model_controls(explorer):
    explorer.hook_select.value = "resid_post"
    explorer.run_button.click()
    assert explorer.error.value == "" and set(explorer.table.hook) == {"resid_post"}
    explorer.metric_select.value = TARGET_PROBABILITY
    explorer.run_button.click()
    assert explorer.error.value == "" and repr(explorer.metric).startswith("target_probability")
    assert explorer.other_input.layout.display == "none"
    explorer.hook_select.value = "c"
    explorer.model_select.value = "one"  # the chosen hook is kept where the new model has it
    assert explorer.hook_select.value == "c"
    assert explorer.error.value == "" and set(explorer.table.layer) == {0} and set(explorer.table.hook) == {"c"}


@pytest.mark.parametrize("values, message", [
    ({"corrupted_input": "x abc"}, "equal token length"),
    ({"clean_input": ""}, "clean text is empty"),
    ({"corrupted_input": CLEAN}, "identical"),
    ({"answer_input": "ab"}, "type exactly one token"),
    ({"answer_input": ""}, "type the answer token"),
    ({"other_input": "#"}, "the same"),
])
def test_bad_input_shows_a_message_inside_the_widget(models, values, message):
    ex = PatchingExplorer(models["two"], CLEAN, CORRUPTED, answer="#", other="a")
    assert ex.error.value == ""
    for field, value in values.items():
        getattr(ex, field).value = value
    ex.run_button.click()
    assert message in ex.error.value
    assert ex.table is None and ex.prediction_html.value == ""
    ex.select(0, 0)  # nothing to inspect: says so
    assert "press Run first" in ex.error.value
    for field, value in (("clean_input", CLEAN), ("corrupted_input", CORRUPTED), ("answer_input", "#"),
                         ("other_input", "a")):
        getattr(ex, field).value = value
    ex.run_button.click()  # and it recovers
    assert ex.error.value == "" and ex.table is not None


def test_run_false_waits_for_the_button(models):
    ex = PatchingExplorer(models["two"], CLEAN, CORRUPTED, answer="#", other="a", run=False)
    assert ex.table is None and ex.error.value == ""
    ex.run_button.click()
    assert ex.table is not None and torch.isfinite(torch.tensor(ex.table.effect.to_numpy())).all()


def test_top_predictions_reads_one_position(models):
    model = models["one"]
    logits = torch.zeros(model.cfg.d_vocab)
    logits[model.to_tokens("#")[0, 0]] = 5.0
    table = top_predictions(model, logits, 3)
    assert table["token"].iloc[0] == "#" and table["rank"].tolist() == [1, 2, 3]
    assert table["prob"].is_monotonic_decreasing
    with pytest.raises(ValueError, match=r"one position's \[vocab\]"):
        top_predictions(model, logits[None], 3)
