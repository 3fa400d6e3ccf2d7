"""Generation one token at a time: the prefix runs once, then the recurrence steps on its state.

Hooks fire at every new token with `[batch, 1, ...]` tensors, so steering and patching hooks act
during generation exactly as in a forward pass; the prefix is never recomputed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from workbench.models.hooked import HookedRecurrentLM


@torch.no_grad()
def generate(
    model: HookedRecurrentLM,
    prompt: str | Tensor,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = 0,
    path: str | None = None,
    return_text: bool | None = None,
) -> str | Tensor:
    """Continue `prompt` by `max_new_tokens` tokens, greedily or by seeded sampling.

    Returns text when the prompt was text (and the model has a tokenizer), else token ids
    [batch, pos + max_new_tokens].
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature <= 0 and not greedy:
        raise ValueError("temperature must be positive (or pass greedy=True)")
    as_text = isinstance(prompt, str) if return_text is None else return_text
    tokens = model._as_tokens(prompt)  # [batch, pos]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=tokens.device).manual_seed(seed)
    logits, state = model(tokens, return_state=True, path=path)
    pieces = [tokens]
    for _ in range(max_new_tokens):
        last = logits[:, -1].float()  # [batch, d_vocab]
        if greedy:
            next_token = last.argmax(-1, keepdim=True)
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator)  # [batch, 1]
        pieces.append(next_token)
        logits, state = model(next_token, initial_state=state, return_state=True, path=path)
    out = torch.cat(pieces, dim=1)
    if as_text:
        return model.tokenizer.decode(out[0])
    return out
