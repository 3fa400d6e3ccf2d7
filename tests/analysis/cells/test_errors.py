"""Bad input to the cell analyses gives clear errors; chunked recording equals one pass."""

import numpy as np
import pytest
import torch

from workbench.analysis.cells import cell_heatmap, gate_saturation, planted_lstm, record
from workbench.errors import (
    EmptyInputError,
    MemoryBudgetError,
    UnknownCharacterError,
    UnknownHookError,
)
from workbench.models import HookedRecurrentLM, RecurrentConfig


@pytest.fixture(scope="module")
def model():
    return planted_lstm(n_layers=2)


def test_empty_text_raises(model):
    with pytest.raises(EmptyInputError, match="empty"):
        record(model, "")
    with pytest.raises(EmptyInputError):
        cell_heatmap(model, "", quantity="c")


def test_unknown_character_names_it_and_its_position(model):
    with pytest.raises(UnknownCharacterError, match=r"'é'.*position 3"):
        record(model, "abcé")


def test_unknown_quantity_suggests_the_close_name(model):
    with pytest.raises(UnknownHookError, match=r"unknown quantity 'cc'.*did you mean 'c'"):
        record(model, "abc", ["cc"])
    with pytest.raises(UnknownHookError, match="unknown quantity 'z' for a lstm mixer"):
        gate_saturation(model, "abc", gates=["z"])


def test_unknown_layer_and_unit_say_what_exists(model):
    with pytest.raises(UnknownHookError, match="unknown layer 5: the model has 2 layer"):
        record(model, "abc", ["c"], [5])
    rec = record(model, "abc", ["c"], [1])
    with pytest.raises(UnknownHookError, match="layer 0 quantity 'c' was not recorded"):
        rec.get(0, "c")
    with pytest.raises(IndexError, match="unit 99 out of range"):
        rec.unit(1, "c", 99)


def test_text_too_long_for_the_budget_is_refused_before_running(model):
    with pytest.raises(MemoryBudgetError, match=r"memory budget is .*shorter text"):
        record(model, "x" * 1000, memory_budget_bytes=10_000)


def test_model_without_tokenizer_needs_one():
    bare = HookedRecurrentLM(RecurrentConfig(family="gru", n_layers=1, d_model=8, d_hidden=8, d_vocab=100))
    with pytest.raises(ValueError, match="no tokenizer"):
        record(bare, "abc")


@pytest.mark.parametrize("family", ["lstm", "gru", "mingru", "s6"])
def test_chunked_recording_equals_one_pass(family):
    torch.manual_seed(0)
    tok = planted_lstm().tokenizer
    m = HookedRecurrentLM(
        RecurrentConfig(family=family, n_layers=2, d_model=8, d_hidden=8, d_vocab=len(tok), d_state=4)
    )
    m.tokenizer = tok
    text = "for i in range(3):\n    print(i)\n" * 3
    whole = record(m, text, chunk=10_000)
    pieces = record(m, text, chunk=7)
    for key, value in whole.values.items():
        np.testing.assert_allclose(pieces.values[key], value, atol=1e-5)
    assert whole.get(*whole.keys[-1]).shape[0] == len(text)
