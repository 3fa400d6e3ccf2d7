"""`model.score`: a long input scored window by window with the recurrent state carried, in bounded memory.

A recurrent model's state after window k is all window k+1 needs, so the loss and the per-token
log-probabilities of a text of any length come out equal to one pass over it (float64: to rounding)
while memory holds one window's forward at a time. Recorded hooks go to a `sink` per window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.models.cache import RecurrentCache, memory_budget
from workbench.models.memory import (
    MAX_AUTO_WINDOW,
    check_estimate,
    checked_by_caller,
    estimate_call,
    fitting_window,
)

if TYPE_CHECKING:
    from workbench.models.hooked import ModelState, NamesFilter
    from workbench.models.language_model import HookedLanguageModel

WindowSink = Callable[[int, RecurrentCache], None]


@dataclass
class StreamedScore:
    """What `model.score` returns: the loss, the per-token log-probs and the state after the input."""

    loss: float  # mean next-token cross-entropy in nats over every predicted token, as return_type="loss"
    log_probs: Tensor  # [batch, pos - 1]: log p(token t+1 | tokens <= t), in the model's dtype
    final_state: ModelState  # one dict per layer, to continue from (initial_state=)
    window: int  # positions per window
    n_windows: int


def score(
    model: HookedLanguageModel, inputs: Tensor | str | Sequence[str], *, window: int | None = None,
    names_filter: NamesFilter = None, sink: WindowSink | None = None,
    initial_state: ModelState | None = None, path: str | None = None,
    memory_budget_bytes: int | None = None, progress: bool = False,
) -> StreamedScore:
    """Score `inputs` (text or ids [batch, pos]) in windows of `window` positions, state carried.

    `window` None picks the largest that fits the budget (at most `MAX_AUTO_WINDOW`); a given window
    over the budget raises `MemoryBudgetError` before anything runs. With `names_filter`, each window's
    recording of those hooks is passed to `sink(start, cache)` (`start`: the window's first absolute
    position; `cache`: [batch, window, ...] tensors) and then dropped, so nothing grows with the input.
    Runs under `torch.no_grad()`.
    """
    tokens = model._as_tokens(inputs)  # [batch, pos]
    batch, length = tokens.shape
    if length < 2:
        raise ValueError(f"score needs at least two tokens to predict one; got {length}")
    names = model.resolve_names(names_filter) if names_filter is not None else []
    if names and sink is None:
        raise ValueError("names_filter records hooks in every window: pass sink=fn(start, cache) to receive "
                         "them (score keeps no recording, so memory stays bounded)")
    if sink is not None and not callable(sink):
        raise TypeError(f"sink must be a callable sink(start, cache), got {type(sink).__name__}")
    path = model.resolve_path(path)
    budget = memory_budget_bytes or memory_budget(model.device)
    if window is None:
        window = min(MAX_AUTO_WINDOW, fitting_window(model, batch, budget, names, path), length)
    elif isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of positions, got {window!r}")
    window = min(window, length)
    estimate = estimate_call(model, batch, window, recorded=names, return_type="logits", path=path)
    check_estimate(model, estimate, budget, what=f"score with window {window:,}", recorded=names, path=path)
    return _run_windows(model, tokens, window, names, sink, initial_state, path, budget, progress)


@torch.no_grad()
def _run_windows(
    model: HookedLanguageModel, tokens: Tensor, window: int, names: list[str], sink: WindowSink | None,
    state: ModelState | None, path: str, budget: int, progress: bool,
) -> StreamedScore:
    """The loop: one forward per window from the carried state; log-probs gathered as they come."""
    from tqdm.auto import tqdm

    batch, length = tokens.shape
    log_probs = torch.empty(batch, length - 1, dtype=next(model.parameters()).dtype, device=tokens.device)
    starts = range(0, length, window)
    for start in tqdm(starts, desc="scoring", unit="window", disable=not progress):
        part = tokens[:, start : start + window]  # [batch, n]
        with checked_by_caller():  # checked above for a whole window
            if names:
                (logits, state), cache = model.run_with_cache(
                    part, names_filter=names, initial_state=state, return_state=True, path=path,
                    memory_budget_bytes=budget,
                )
                sink(start, cache)
                del cache
            else:
                logits, state = model(part, initial_state=state, return_state=True, path=path)
        # the final state may be a view into this window's buffers: copy it so they can be freed
        state = [{name: value.clone() for name, value in layer.items()} for layer in state]
        targets = tokens[:, start + 1 : start + window + 1]  # [batch, n or n - 1 at the end]
        predicted = torch.log_softmax(logits[:, : targets.shape[1]], dim=-1)  # [batch, n', d_vocab]
        log_probs[:, start : start + targets.shape[1]] = predicted.gather(-1, targets[..., None])[..., 0]
        del logits, predicted
    loss = float(-log_probs.double().sum() / log_probs.numel())
    return StreamedScore(loss, log_probs, state, window, len(starts))
