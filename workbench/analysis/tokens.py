"""Text to token ids for every analysis: one `tokenize`, so empty text, a missing tokenizer and
unknown characters fail the same way everywhere; and the printable-ASCII tokenizer that planted
models and tests share.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from workbench.errors import EmptyInputError, MissingTokenizerError

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["group_by_length", "printable_tokenizer", "tokenize", "tokenize_texts", "tokenizer_of"]


def tokenizer_of(model: HookedModel | None, tokenizer: Any = None) -> Any:
    """`tokenizer`, else the model's; neither raises a ValueError that says how to get one."""
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        hint = getattr(model, "tokenizer_hint", "load it with workbench.load(...)")
        raise MissingTokenizerError(f"this model has no tokenizer: pass tokenizer=..., or {hint}")
    return tok


def tokenize(
    model: HookedModel | None, text: str, tokenizer: Any = None, *, unknown: str | None = None,
    label: str = "the text",
) -> Tensor:
    """text -> ids [pos] with `tokenizer` or the model's; empty text raises, naming it `label`.

    `unknown` ("error" or "map") overrides the tokenizer's own rule for characters outside its
    vocabulary; by default an unknown character raises `UnknownCharacterError`, naming it and where.
    """
    if not isinstance(text, str):
        raise TypeError(f"{label} must be a str, got {type(text).__name__}")
    if not text:
        raise EmptyInputError(f"{label} is empty: type at least one character")
    tok = tokenizer_of(model, tokenizer)
    return tok.encode(text) if unknown is None else tok.encode(text, unknown=unknown)


def tokenize_texts(
    model: HookedModel, texts: Sequence[str], what: str, *, unknown: str | None = None
) -> list[Tensor]:
    """Each text -> ids [pos]; a non-list, an empty list or an empty text raises, naming `what`."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of texts, got {type(texts).__name__}")
    if not texts:
        raise EmptyInputError(f"no {what} texts given: give at least one")
    tokenizer_of(model)
    return [tokenize(model, text, unknown=unknown, label=f"{what} text {i}") for i, text in enumerate(texts)]


def group_by_length(encoded: Sequence[Tensor]) -> dict[int, list[int]]:
    """Length -> indices of the sequences of that length, so equal lengths run as one batch."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    return groups


def printable_tokenizer() -> Any:
    """A character tokenizer over Python's printable ASCII plus an unknown token (U+FFFD)."""
    from workbench.data.tokenizer import DEFAULT_UNKNOWN_TOKEN, CharTokenizer

    chars = [DEFAULT_UNKNOWN_TOKEN] + sorted(set(string.printable))
    return CharTokenizer(chars, unknown_token=DEFAULT_UNKNOWN_TOKEN, unknown="error")
