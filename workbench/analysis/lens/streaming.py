"""Read a long text as `batch` contiguous streams, one window at a time, carrying the recurrent state.

The same scheme the workbench trains with (truncated BPTT): the tuned lens sees residual streams
with the long context the model is used with, not the cold start of every short window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from workbench.analysis.tokens import tokenize

__all__ = ["corpus_text", "encode_corpus", "streams", "windows"]


def corpus_text(text_or_corpus: Any, split: str = "train") -> str:
    """A `Corpus` (its `split`) or a str -> the text."""
    if isinstance(text_or_corpus, str):
        return text_or_corpus
    if hasattr(text_or_corpus, "split") and callable(text_or_corpus.split):
        return text_or_corpus.split(split)
    raise TypeError(f"expected text (str) or a workbench Corpus, got {type(text_or_corpus).__name__}")


def encode_corpus(tokenizer: Any, text: str) -> Tensor:
    """Corpus text -> ids [n]; rare characters map to the unknown token where the vocabulary has one."""
    unknown = "map" if getattr(tokenizer, "unknown_token", None) is not None else "error"
    return tokenize(None, text, tokenizer, unknown=unknown, label="the corpus text")


def streams(ids: Tensor, batch_size: int, min_length: int) -> Tensor:
    """ids [n] -> [batch, n // batch]: contiguous slices of the text, one per row.

    Fewer rows when the text is short; a text shorter than `min_length` tokens raises.
    """
    if ids.shape[0] < min_length:
        raise ValueError(f"the text has {ids.shape[0]} tokens; at least {min_length} are needed")
    rows = max(1, min(batch_size, ids.shape[0] // min_length))
    length = ids.shape[0] // rows
    return ids[: rows * length].view(rows, length)


def windows(data: Tensor, seq_len: int, steps: int | None = None) -> Iterator[tuple[Tensor, bool]]:
    """Successive windows [batch, <= seq_len] of `data` [batch, length] and whether the state resets.

    With `steps`, cycles through the text (resetting the state at each wrap) until `steps` windows;
    without, one pass.
    """
    start, done = 0, 0
    while steps is None or done < steps:
        if start >= data.shape[1] or (steps is not None and start + seq_len > data.shape[1]):
            if steps is None:
                return
            start = 0
        yield data[:, start : start + seq_len], start == 0
        start += seq_len
        done += 1
