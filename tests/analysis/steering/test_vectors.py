"""Steering vectors (Rimsky et al. 2024): a planted direction is recovered at the residual stream
and in the cell state; bad input gives clear errors; saved vectors refuse another model."""

import pytest
import torch

from workbench.analysis.steering import (
    COMMENT_CELL,
    COMMENT_DIRECTION,
    ModelMismatchError,
    SteeringVector,
    behaviour_vector,
    contrastive_vector,
    planted_steering_lstm,
    resolve_hook,
)
from workbench.errors import EmptyInputError, UnknownCharacterError, UnknownHookError

POSITIVE = ["x = 1  # set it", "def f():  # a", "y = [1, 2]  # two"]
NEGATIVE = ["x = 1  + set it", "def f():  + a", "y = [1, 2]  + two"]


@pytest.fixture(scope="module")
def model():
    return planted_steering_lstm(n_layers=2)


def unit(i: int, n: int) -> torch.Tensor:
    e = torch.zeros(n)
    e[i] = 1.0
    return e


@pytest.mark.parametrize("position, least", [("last", 0.999), (-2, 0.999), ("mean", 0.95), ("all", 0.95)])
def test_planted_residual_direction_is_recovered(model, position, least):
    # "mean" and "all" also see the one position where the pair differs ('#' vs '+' embed apart)
    v = contrastive_vector(model, POSITIVE, NEGATIVE, "resid_post", layer=0, position=position)
    assert v.hook == "blocks.0.hook_resid_post" and v.shape == (8,)
    cos = torch.nn.functional.cosine_similarity(v.vector, unit(COMMENT_DIRECTION, 8), dim=0)
    assert cos > least
    assert torch.all(v.pair_cosines > least)


def test_planted_cell_is_recovered_in_the_cell_state(model):
    v = contrastive_vector(model, POSITIVE, NEGATIVE, "c", layer=0)
    assert v.hook == "blocks.0.mixer.hook_c"
    torch.testing.assert_close(v.vector, unit(COMMENT_CELL, 4), atol=1e-6, rtol=0)


def test_whitening_and_normalisation_keep_the_direction(model):
    # at the last position the classes differ only along the planted direction, so the LDA
    # direction Σ⁻¹Δμ is that direction, with its projection on Δμ kept at |Δμ|²
    raw = contrastive_vector(model, POSITIVE, NEGATIVE, "resid_post", layer=0)
    white = contrastive_vector(model, POSITIVE, NEGATIVE, "resid_post", layer=0, whiten=True)
    planted = unit(COMMENT_DIRECTION, 8)
    assert torch.nn.functional.cosine_similarity(white.vector, planted, dim=0) > 0.999
    assert float(white.vector @ raw.vector) == pytest.approx(float(raw.vector @ raw.vector), rel=1e-4)
    assert contrastive_vector(model, POSITIVE, NEGATIVE, layer=0, normalize="unit").norm == pytest.approx(1.0)
    rel = contrastive_vector(model, POSITIVE, NEGATIVE, layer=0, normalize="relative")
    assert rel.norm == pytest.approx(rel.reference_norm, rel=1e-5)


def test_two_sets_of_different_sizes_are_allowed_unpaired(model):
    v = contrastive_vector(model, POSITIVE, NEGATIVE[:1], layer=0, paired=False)
    assert v.pair_cosines is None and v.n_positive == 3 and v.n_negative == 1


def test_s6_state_vector_has_the_state_shape():
    m = planted_steering_lstm()
    from workbench.models import HookedRecurrentLM, RecurrentConfig

    torch.manual_seed(0)
    s6 = HookedRecurrentLM(RecurrentConfig(family="s6", n_layers=1, d_model=8, d_hidden=6, d_state=3,
                                           d_vocab=len(m.tokenizer)))
    s6.tokenizer = m.tokenizer
    v = contrastive_vector(s6, POSITIVE, NEGATIVE, "state", layer=0)
    assert v.shape == (6, 3) and v.hook == "blocks.0.mixer.hook_state"


def test_mismatched_pair_counts_raise(model):
    with pytest.raises(ValueError, match="3 positive and 2 negative.*paired=False"):
        contrastive_vector(model, POSITIVE, NEGATIVE[:2])


@pytest.mark.parametrize("positive, negative, error, message", [
    ([], [], EmptyInputError, "no positive texts"),
    (["abc", ""], ["abd", "x"], EmptyInputError, "positive text 1 is empty"),
    ("abc", ["abd"], TypeError, "lists of texts"),
    (["naïve"], ["naive"], UnknownCharacterError, "'ï'"),
    (["abc"], ["abc"], ValueError, "identical"),
])
def test_bad_texts_raise_clearly(model, positive, negative, error, message):
    with pytest.raises(error, match=message):
        contrastive_vector(model, positive, negative, layer=0)


def test_unknown_hook_layer_and_position_raise(model):
    with pytest.raises(UnknownHookError, match="did you mean 'resid_post'"):
        resolve_hook(model, "resid_psot", 0)
    with pytest.raises(UnknownHookError, match="unknown layer 5: the model has 2"):
        resolve_hook(model, "c", 5)
    with pytest.raises(UnknownHookError, match="no position axis"):
        resolve_hook(model, "blocks.0.mixer.hook_initial_c")
    with pytest.raises(UnknownHookError, match="unknown hook 'state'"):
        resolve_hook(model, "state", 0)  # an LSTM has no S6 state
    with pytest.raises(ValueError, match="unknown position 'first'"):
        contrastive_vector(model, POSITIVE, NEGATIVE, position="first")
    with pytest.raises(IndexError, match="position 40 is outside positive text 0"):
        contrastive_vector(model, POSITIVE, NEGATIVE, position=40)


def test_saved_vector_round_trips_and_refuses_another_model(model, tmp_path):
    v = contrastive_vector(model, POSITIVE, NEGATIVE, "c", layer=0, label="comment")
    back = SteeringVector.load(v.save(tmp_path / "comment.safetensors"))
    torch.testing.assert_close(back.vector, v.vector)
    torch.testing.assert_close(back.pair_cosines, v.pair_cosines)
    assert (back.hook, back.label, back.position) == (v.hook, "comment", "last")
    assert back.weights_hash == v.weights_hash
    back.check_model(model)
    other = planted_steering_lstm(n_layers=2, seed=1)  # different random content embedding
    with pytest.raises(ModelMismatchError, match="allow_other_model=True"):
        back.check_model(other)
    back.check_model(other, allow_other_model=True)


def test_built_in_behaviour_vectors_build_on_a_printable_model(model):
    v = behaviour_vector(model, "comment", "resid_post", layer=0)
    assert v.n_positive == v.n_negative == 10 and v.label == "comment @ resid_post L0"
    with pytest.raises(KeyError, match="built-in: open_quote"):
        behaviour_vector(model, "sarcasm")
