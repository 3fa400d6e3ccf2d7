"""Bad input to the lenses gives clear errors, before anything runs."""

import pytest
import torch

from workbench.analysis.lens import LogitLens, TunedLens, evaluate_lenses, prediction_trajectory
from workbench.analysis.planted import planted_affine_lm
from workbench.errors import EmptyInputError, MemoryBudgetError, UnknownCharacterError, UnknownHookError
from workbench.models import HookedRecurrentLM, HookedRecurrentSeq2Seq, RecurrentConfig


@pytest.fixture(scope="module")
def model():
    return planted_affine_lm(n_layers=3)


def test_empty_text_raises(model):
    with pytest.raises(EmptyInputError, match="empty"):
        prediction_trajectory(LogitLens(model), "")
    with pytest.raises(EmptyInputError, match="empty"):
        TunedLens.from_model(model).fit("", progress=False)
    with pytest.raises(EmptyInputError, match="empty"):
        evaluate_lenses(model, "")


def test_unknown_character_names_it_and_its_position(model):
    with pytest.raises(UnknownCharacterError, match=r"'é'.*position 3"):
        prediction_trajectory(LogitLens(model), "abcé")


def test_unknown_layer_says_which_layers_exist(model):
    resid = torch.zeros(1, 2, model.cfg.d_model)
    message = r"unknown layer 3: the model has 3 layer\(s\), 0..2, and 'embed'"
    with pytest.raises(UnknownHookError, match=message):
        LogitLens(model)(resid, 3)
    with pytest.raises(UnknownHookError, match=message):
        TunedLens.from_model(model)(resid, 3)
    with pytest.raises(UnknownHookError, match="unknown layer 'mlp'"):
        TunedLens.from_model(model).translate(resid, "mlp")
    trajectory = prediction_trajectory(LogitLens(model), "abc")
    with pytest.raises(UnknownHookError, match="unknown layer 3: this trajectory reads out layers embed, 0"):
        trajectory.top_k(3, 0)
    with pytest.raises(IndexError, match="position 7 out of range: the text has 3 characters"):
        trajectory.top_k(0, 7)
    with pytest.raises(KeyError, match="unknown statistic 'loss'"):
        trajectory.statistic("loss")


def test_text_too_short_to_train_on_says_how_much_is_needed(model):
    with pytest.raises(ValueError, match="the text has 10 tokens; at least 128 are needed"):
        TunedLens.from_model(model).fit("x" * 10, progress=False)
    with pytest.raises(ValueError, match="steps must be positive"):
        TunedLens.from_model(model).fit("x" * 500, steps=0, progress=False)


def test_a_trajectory_over_the_memory_budget_is_refused_before_running(model):
    with pytest.raises(MemoryBudgetError, match="memory budget is .*shorter text"):
        prediction_trajectory(LogitLens(model), "x" * 1000, memory_budget_bytes=100_000)


def test_models_without_an_unembedding_or_tokenizer_are_refused():
    seq2seq = HookedRecurrentSeq2Seq(RecurrentConfig(family="gru", n_layers=2, d_model=8, d_hidden=8,
                                                     d_input=3, d_output=3))
    with pytest.raises(TypeError, match="has no 'unembed'"):
        LogitLens(seq2seq)
    bare = HookedRecurrentLM(RecurrentConfig(family="gru", n_layers=2, d_model=8, d_hidden=8, d_vocab=50))
    with pytest.raises(ValueError, match="no tokenizer"):
        prediction_trajectory(LogitLens(bare), "abc")
    with pytest.raises(ValueError, match="no tokenizer"):
        TunedLens.from_model(bare).fit("abc" * 100, progress=False)
