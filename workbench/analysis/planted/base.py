"""The frame every planted model starts from: a seeded random language model with a character tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from workbench.analysis.tokens import printable_tokenizer

if TYPE_CHECKING:
    from workbench.models import HookedRecurrentLM


def planted_lm(tokenizer: Any, seed: int, **config: Any) -> HookedRecurrentLM:
    """A `HookedRecurrentLM` of `config` (d_vocab from the tokenizer; default: printable ASCII) with
    weights drawn after `torch.manual_seed(seed)`, for a planted model to set by hand."""
    from workbench.models import HookedRecurrentLM, RecurrentConfig

    tok = tokenizer if tokenizer is not None else printable_tokenizer()
    torch.manual_seed(seed)
    model = HookedRecurrentLM(RecurrentConfig(d_vocab=len(tok), **config))
    model.tokenizer = tok
    return model
