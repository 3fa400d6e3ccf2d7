"""Patching metrics: functions `(logits [batch, pos, vocab]) -> [batch]`, one number per run.

Any callable of that signature works; these are the usual ones (Heimersheim & Nanda 2024, *How to
use and interpret activation patching*): a logit difference between two answers, an answer's
probability, and the KL divergence from the clean distribution. Each takes batches that repeat its
n pairs (row r is pair r % n), as a batched sweep runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from workbench.analysis.patching.inputs import tile_rows

__all__ = ["Metric", "check_metric", "kl_to_clean", "logit_difference", "target_probability"]

Metric = Callable[[Tensor], Tensor]  # logits [batch, pos, vocab] -> [batch]


def _ids(ids: int | Sequence[int] | Tensor, batch: int, device: torch.device) -> Tensor:
    """One token id per row [batch], from one id or one per pair."""
    t = torch.as_tensor(ids, device=device).long().reshape(-1)  # [1] or [n]
    return tile_rows(t, batch) if t.numel() > 1 else t.expand(batch)


def _at(logits: Tensor, position: int) -> Tensor:
    """logits [batch, pos, vocab] -> [batch, vocab] at `position` (negative: from the end)."""
    length = logits.shape[1]
    if not -length <= position < length:
        raise IndexError(f"metric position {position} is out of range for {length} position(s)")
    return logits[:, position]


class logit_difference:  # noqa: N801  (used like a function)
    """logit(correct) − logit(incorrect) at `position`; ids are one per pair or one for all."""

    def __init__(self, correct: int | Sequence[int] | Tensor, incorrect: int | Sequence[int] | Tensor,
                 position: int = -1):
        self.correct, self.incorrect, self.position = correct, incorrect, int(position)

    def __call__(self, logits: Tensor) -> Tensor:
        at = _at(logits, self.position)  # [batch, vocab]
        rows = torch.arange(at.shape[0], device=at.device)
        good = at[rows, _ids(self.correct, at.shape[0], at.device)]
        bad = at[rows, _ids(self.incorrect, at.shape[0], at.device)]
        return good - bad  # [batch]

    def __repr__(self) -> str:
        return f"logit_difference({self.correct!r}, {self.incorrect!r}, position={self.position})"


class target_probability:  # noqa: N801
    """p(target) at `position` under the softmax of the logits."""

    def __init__(self, target: int | Sequence[int] | Tensor, position: int = -1):
        self.target, self.position = target, int(position)

    def __call__(self, logits: Tensor) -> Tensor:
        probs = torch.softmax(_at(logits, self.position), dim=-1)  # [batch, vocab]
        rows = torch.arange(probs.shape[0], device=probs.device)
        return probs[rows, _ids(self.target, probs.shape[0], probs.device)]  # [batch]

    def __repr__(self) -> str:
        return f"target_probability({self.target!r}, position={self.position})"


class kl_to_clean:  # noqa: N801
    """KL(clean ‖ run) at `position` (nats): 0 for the clean run itself, large when it is corrupted."""

    def __init__(self, clean_logits: Tensor, position: int = -1):
        self.position = int(position)
        self.clean_log_probs = torch.log_softmax(_at(clean_logits.detach(), self.position), -1)  # [n, vocab]

    def __call__(self, logits: Tensor) -> Tensor:
        log_q = torch.log_softmax(_at(logits, self.position), dim=-1)  # [batch, vocab]
        log_p = tile_rows(self.clean_log_probs.to(log_q), log_q.shape[0])
        return (log_p.exp() * (log_p - log_q)).sum(-1)  # [batch]

    def __repr__(self) -> str:
        return f"kl_to_clean(position={self.position})"


def check_metric(metric: Metric, logits: Tensor) -> Tensor:
    """`metric(logits)` checked to be one number per row: [batch]; anything else raises a TypeError."""
    if not callable(metric):
        raise TypeError(f"metric must be a callable (logits [batch, pos, vocab]) -> [batch], got {metric!r}")
    value = metric(logits)
    if not isinstance(value, Tensor) or tuple(value.shape) != (logits.shape[0],):
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(
            f"metric {metric!r} returned {shape}; it must return one number per batch row, "
            f"[{logits.shape[0]}]"
        )
    return value
