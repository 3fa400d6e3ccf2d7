"""Batches for fitting a tuned lens from an activation store: the stored residual streams and the
model's final distribution decoded from the stored final residual, one block of positions per step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from workbench.analysis.lens.logit_lens import Layer
from workbench.errors import UnknownHookError
from workbench.store.reader import ActivationStore

__all__ = ["store_batches"]


def store_batches(
    lens: Any, store: ActivationStore | str, layers: list[Layer], steps: int, tokens_per_step: int,
) -> tuple[Iterator[tuple[dict[str, Tensor], Tensor]], ActivationStore]:
    """(batches of (hook -> [tokens_per_step, d_model], final log-probs [tokens_per_step, d_vocab]), the store).

    Refuses, before any step, a store lacking a read-out hook or raw tensors, or shorter than a step.
    """
    store = ActivationStore(store) if not isinstance(store, ActivationStore) else store
    hooks = lens.hooks()
    names = [hooks[layer] for layer in layers]
    final = hooks[lens.layers[-1]]
    missing = [name for name in [*names, final] if name not in store.hooks]
    if missing:
        raise UnknownHookError(missing[0], message=(
            f"store: a tuned lens reads {[*names, final]}; the store lacks {missing} (it holds {store.hooks}): "
            "record them with workbench.record(model, corpus, out_dir, hooks=[...])"))
    store.values(final, 0, 0)  # raises if the store kept no raw tensors
    if tokens_per_step > store.n_tokens:
        raise ValueError(f"tokens_per_step={tokens_per_step:,} is more than the store's {store.n_tokens:,} tokens")
    param = next(lens.model.parameters())

    def batches() -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        start = 0
        for _ in range(steps):
            if start + tokens_per_step > store.n_tokens:
                start = 0
            stop = start + tokens_per_step
            acts = {name: store.values(name, start, stop).to(param.device, param.dtype) for name in names}
            with torch.no_grad():
                resid = store.values(final, start, stop).to(param.device, param.dtype)  # [n, d_model]
                target = lens.unembedding(resid).float().log_softmax(-1)  # [n, d_vocab]
            yield acts, target
            start = stop

    return batches(), store
