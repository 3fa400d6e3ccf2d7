"""Prediction trajectories: statistics agree with the model, top-k is sorted, figures carry the data."""

import numpy as np
import pytest
import torch

from workbench.analysis.lens import LogitLens, TunedLens, evaluate_lenses, prediction_trajectory
from workbench.analysis.lens.figures import (
    evaluation_figure,
    top_k_figure,
    top_k_layers_figure,
    training_figure,
    trajectory_figure,
)
from workbench.analysis.planted import planted_affine_lm

TEXT = "print(len([1, 2, 3]))\n"


@pytest.fixture(scope="module")
def model():
    return planted_affine_lm(n_layers=3)


@pytest.fixture(scope="module")
def trajectory(model):
    return prediction_trajectory(LogitLens(model), TEXT)


def test_statistics_have_one_value_per_layer_and_position(trajectory):
    for name in ("entropy", "kl", "ce"):
        assert trajectory.statistic(name).shape == (4, len(TEXT))
    assert trajectory.labels == ["embed", "0", "1", "2"]
    assert (trajectory.entropy() >= 0).all() and (trajectory.entropy() <= np.log2(101) + 1e-4).all()


def test_the_last_layer_is_the_model_itself(model, trajectory):
    np.testing.assert_allclose(trajectory.kl_to_final()[-1], 0.0, atol=1e-5)
    assert (trajectory.kl_to_final()[:-1] > 0).all()
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        nats = torch.nn.functional.cross_entropy(model(tokens)[0, :-1], tokens[0, 1:], reduction="none")
    ce = trajectory.cross_entropy()
    np.testing.assert_allclose(ce[-1, :-1], nats.numpy() / np.log(2), rtol=1e-5)
    assert np.isnan(ce[:, -1]).all()


def test_top_k_is_sorted_and_agrees_with_top1(trajectory):
    table = trajectory.top_k(1, 5, k=8)
    assert list(table["rank"]) == list(range(1, 9))
    assert (np.diff(table.prob) <= 0).all() and table.prob.sum() <= 1 + 1e-6
    assert table.token.iloc[0] == trajectory.top1()[2, 5]
    tokens, probs = trajectory.top_k_by_layer(5, k=3)
    assert tokens.shape == probs.shape == (4, 3)
    assert tokens[2, 0] == table.token.iloc[0] and probs[2, 0] == pytest.approx(table.prob.iloc[0])


def test_trajectory_figure_is_a_layer_by_position_grid_with_top_tokens_on_hover(trajectory):
    fig = trajectory_figure(trajectory, "kl", selected=(0, 3))
    heat = fig.data[0]
    assert np.asarray(heat.z).shape == (4, len(TEXT))
    assert list(heat.y) == ["embed", "0", "1", "2"]
    top = trajectory.top_k(0, 3, k=5)
    hover = heat.hovertext[1][3]
    assert "layer 0, position 3" in hover and all(t in hover for t in top.token if t.isalnum())
    assert fig.layout.shapes[0].x0 == 2.5  # the selected cell is outlined
    window = trajectory_figure(trajectory, "entropy", start=4, stop=10)
    assert np.asarray(window.data[0].z).shape == (4, 6)
    with pytest.raises(KeyError):
        trajectory_figure(trajectory, "perplexity")


def test_top_k_figures(trajectory):
    fig = top_k_figure(trajectory, "embed", 2, k=6)
    assert len(fig.data) == 2 and len(fig.data[0].x) == 6
    grid = top_k_layers_figure(trajectory, 2, k=4)
    assert np.asarray(grid.data[0].z).shape == (4, 4)


def test_evaluation_and_training_figures_draw_a_line_per_lens(model):
    lens = TunedLens.from_model(model).fit("abc(d)\n" * 400, steps=5, batch_size=2, seq_len=32,
                                           progress=False)
    evaluation = evaluate_lenses(model, "xyz[w]\n" * 50, [LogitLens(model), lens], batch_size=2)
    fig = evaluation_figure(evaluation)
    names = {t.name for t in fig.data}
    assert names == {"logit lens", "tuned lens"} and len(fig.data) == 6
    assert list(fig.data[0].x) == ["embed", "0", "1", "2"]
    assert len(training_figure(lens).data) == 3  # translators: embed, 0, 1
    with pytest.raises(ValueError, match="not been fitted"):
        training_figure(TunedLens.from_model(model))
