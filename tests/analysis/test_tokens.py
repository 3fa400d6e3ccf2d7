"""`workbench.analysis.tokens`: the one tokenize every analysis uses, and its errors."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.tokens import group_by_length, printable_tokenizer, tokenize, tokenize_texts
from workbench.errors import EmptyInputError


class Model:
    tokenizer = printable_tokenizer()


def test_tokenize_uses_the_given_or_the_models_tokenizer():
    ids = tokenize(Model(), "ab")
    assert torch.equal(ids, Model.tokenizer.encode("ab"))
    assert torch.equal(tokenize(None, "ab", Model.tokenizer), ids)
    assert tokenize(Model(), "a\u00e9", unknown="map").shape == (2,)


def test_tokenize_errors_name_what_is_wrong():
    with pytest.raises(EmptyInputError, match="the corpus text is empty"):
        tokenize(Model(), "", label="the corpus text")
    with pytest.raises(TypeError, match="must be a str"):
        tokenize(Model(), 3)
    with pytest.raises(ValueError, match="no tokenizer"):
        tokenize(None, "ab")
    with pytest.raises(EmptyInputError, match="positive text 1 is empty"):
        tokenize_texts(Model(), ["a", ""], "positive")
    with pytest.raises(TypeError, match="list of texts"):
        tokenize_texts(Model(), "ab", "positive")


def test_group_by_length_keeps_the_order_within_a_length():
    encoded = tokenize_texts(Model(), ["ab", "c", "de", "f"], "input")
    assert group_by_length(encoded) == {2: [0, 2], 1: [1, 3]}
