"""Generation one token at a time: the prefix runs once, then the recurrence steps on its state.

Hooks fire at every new token with `[batch, 1, ...]` tensors, so steering and patching hooks act
during generation exactly as in a forward pass; the prefix is never recomputed.

One loop serves every hooked language model: the workbench's own (`HookedRecurrentLM`) and the
`transformers` adapters (`HookedTransformersLM`). All it needs is a `SteppableLM`: a forward that takes
`initial_state=` and returns the final state (the model turns its prompt into ids first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from workbench.models.paths import ExecutionPath


class SteppableLM(Protocol):
    """What `generate` needs of a model: a tokenizer to decode with, and a forward that carries state."""

    tokenizer: Any  # has .decode(ids [pos]) -> str; None when the model has no tokenizer

    def __call__(self, inputs: Any, *, initial_state: Any = None, return_state: bool = False,
                 path: ExecutionPath | None = None, **kwargs: Any) -> Any: ...


def check_generation_args(max_new_tokens: int, temperature: float, greedy: bool) -> None:
    """Refuse a negative or non-integer length and a non-positive sampling temperature."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__} {temperature!r}")
    if not greedy and not (0 < temperature < math.inf):
        raise ValueError(f"temperature must be positive and finite (or pass greedy=True), got {temperature}")


def next_tokens(last: Tensor, greedy: bool, temperature: float, generator: torch.Generator | None) -> Tensor:
    """logits [batch, d_vocab] -> the next token per row [batch, 1]: argmax, or a seeded draw."""
    last = last.float()
    if greedy:
        return last.argmax(-1, keepdim=True)
    probs = torch.softmax(last / temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("cannot sample the next token: the model's last logits hold NaN or Inf (a hook that "
                         "writes NaN/Inf, or weights that overflow); pass greedy=True or fix the hook")
    return torch.multinomial(probs, 1, generator=generator)  # [batch, 1]


@torch.no_grad()
def continue_tokens(
    model: SteppableLM,
    tokens: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = 0,
    path: ExecutionPath | None = None,
    prompt_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """tokens [batch, pos] -> [batch, pos + max_new_tokens]: the prompt runs once, then one step per token.

    `prompt_kwargs` go to the prompt's forward call only (an adapter's `attention_mask`). Every new
    token also runs through the model once, so hooks see every generated token (as in a forward pass
    over the whole output) and the returned state would continue after the last one.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator(device=tokens.device).manual_seed(seed)
    logits, state = model(tokens, return_state=True, path=path, **dict(prompt_kwargs or {}))
    pieces = [tokens]
    for _ in range(max_new_tokens):
        next_token = next_tokens(logits[:, -1], greedy, temperature, generator)  # [batch, 1]
        pieces.append(next_token)
        logits, state = model(next_token, initial_state=state, return_state=True, path=path)
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def generate(
    model: SteppableLM,
    tokens: Tensor,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = 0,
    path: ExecutionPath | None = None,
    as_text: bool = False,
    *,
    prompt_kwargs: Mapping[str, Any] | None = None,
) -> str | Tensor:
    """Continue the prompt `tokens` [batch, pos] by `max_new_tokens` tokens, greedily or by seeded
    sampling. Returns the decoded first row when `as_text` (the model needs a tokenizer), else token
    ids [batch, pos + max_new_tokens]."""
    check_generation_args(max_new_tokens, temperature, greedy)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    out = continue_tokens(model, tokens, max_new_tokens, temperature, greedy, seed, path, prompt_kwargs)
    if as_text:
        if model.tokenizer is None:
            raise ValueError("return_text=True needs a tokenizer; this model has none")
        return model.tokenizer.decode(out[0])
    return out
