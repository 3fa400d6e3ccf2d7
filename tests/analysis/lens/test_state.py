"""The state lens decodes a layer's vector recurrent state; it trains, evaluates and draws like the others."""

import numpy as np
import pytest
import torch

from workbench.analysis.lens import LogitLens, StateLens, TunedLens, evaluate_lenses, prediction_trajectory
from workbench.analysis.lens.figures import depth_comparison_figure
from workbench.analysis.planted import planted_affine_lm
from workbench.errors import UnknownHookError
from workbench.widgets.lens import LensExplorer

TEXT = "def f(x):\n    return [x, (x + 1)]  # ok\n" * 200


@pytest.fixture(scope="module")
def model():
    return planted_affine_lm(family="lstm", n_layers=2, seed=4)


def test_an_untrained_state_lens_decodes_what_the_state_writes_into_the_residual(model):
    lens = StateLens(model)
    assert lens.hooks() == {0: "blocks.0.mixer.hook_h", 1: "blocks.1.mixer.hook_h"}
    tokens = model.to_tokens(TEXT[:30])
    with torch.no_grad():
        names = ["blocks.0.mixer.hook_h", "blocks.0.hook_mixer_out"]
        _, cache = model.run_with_cache(tokens, names_filter=names)
        direct = model.unembed(model.ln_final(cache["blocks.0.hook_mixer_out"]))
        torch.testing.assert_close(lens(cache["blocks.0.mixer.hook_h"], 0), direct)


def test_fitting_lowers_the_kl_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lens = StateLens(model, "c")
    untrained = evaluate_lenses(model, TEXT[:3000], [StateLens(model, "c")]).metric("kl_bits")
    lens.fit(TEXT, steps=60, batch_size=4, seq_len=64, progress=False)
    trained = evaluate_lenses(model, TEXT[:3000], [lens]).metric("kl_bits")
    assert (trained["state lens (c)"] < untrained["state lens (c)"]).all()
    assert lens.training_["optimizer"] == "SGD" and set(lens.history_[0]) == {"step", "lr", "0", "1"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_state_lens_beside_residual_lenses_in_evaluation_trajectory_and_widget(model):
    state = StateLens(model).fit(TEXT, steps=5, batch_size=2, seq_len=32, progress=False)
    evaluation = evaluate_lenses(model, TEXT[:2000], [LogitLens(model), state])
    kl = evaluation.metric("kl_bits")
    assert list(kl.index) == ["embed", "0", "1"] and np.isnan(kl.loc["embed", "state lens (h)"])
    trajectory = prediction_trajectory(state, "print(x)")
    assert trajectory.labels == ["0", "1"] and trajectory.log_probs.shape[:2] == (2, 8)
    assert trajectory.top_k(-1, 0).prob.iloc[0] > 0
    explorer = LensExplorer(model, [state], "print(x)\n")
    assert explorer.lens_select.value == "state lens (h) (unnamed-lstm-2x8)" and explorer.error.value == ""
    assert list(explorer.layer_slider.options) == ["0", "1"]
    explorer.lens_select.value = "logit lens"
    assert list(explorer.layer_slider.options) == ["embed", "0", "1"]


def test_families_without_a_vector_state_and_unknown_quantities_are_refused():
    with pytest.raises(ValueError, match=r"s6 mixer's recurrent state is not a vector"):
        StateLens(planted_affine_lm(family="s6"))
    with pytest.raises(UnknownHookError, match="'c' is not a gru state; use one of h"):
        StateLens(planted_affine_lm(family="gru"), "c")
    with pytest.raises(UnknownHookError, match="unknown layer 'embed': a state lens reads"):
        StateLens(planted_affine_lm(family="gru"))(torch.zeros(1, 8), "embed")


def test_depth_comparison_draws_one_line_per_model(model):
    other = planted_affine_lm(family="gru", n_layers=3, seed=1)
    evaluations = {
        "lstm": evaluate_lenses(model, TEXT[:1000], [TunedLens.from_model(model)]),
        "gru": evaluate_lenses(other, TEXT[:1000], [TunedLens.from_model(other)]),
    }
    fig = depth_comparison_figure(evaluations)
    assert [t.name for t in fig.data] == ["lstm", "gru"]
    assert list(fig.data[1].x) == [0.0, 1 / 3, 2 / 3, 1.0]
    with pytest.raises(KeyError, match="was not evaluated with 'logit lens'"):
        depth_comparison_figure(evaluations, lens="logit lens")
