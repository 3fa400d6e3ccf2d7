"""Prediction trajectories (Belrose et al. 2023, Fig. 1): what a lens reads out at every layer and
position of one text, with entropy, KL to the final layer, cross-entropy and top-k per cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.analysis.lens.logit_lens import (
    EMBED,
    Layer,
    Lens,
    collect_hooks,
    layer_label,
    model_name,
)
from workbench.analysis.tokens import tokenize, tokenizer_of
from workbench.errors import MemoryBudgetError, UnknownHookError
from workbench.utils import block_name

if TYPE_CHECKING:
    from workbench.models.edits import Edit

__all__ = ["STATISTICS", "PredictionTrajectory", "prediction_trajectory"]

LN2 = math.log(2.0)
STATISTICS = {
    "entropy": "entropy of the lens distribution (bits)",
    "kl": "KL(final || lens) (bits)",
    "ce": "cross-entropy vs the next character (bits)",
}


@dataclass
class PredictionTrajectory:
    """A lens's read-out of one text: `log_probs[r, t]` is read-out r's next-token distribution at t."""

    text: str
    tokens: np.ndarray  # [pos] int64
    str_tokens: list[str]  # [pos] display strings
    vocab: list[str]  # [d_vocab] display string of each id
    layers: list[Layer]  # the read-outs, ["embed", 0, ...]
    log_probs: np.ndarray  # [n_readouts, pos, d_vocab] float32, natural log
    model_log_probs: np.ndarray  # [pos, d_vocab] the model's own output
    lens_name: str = "lens"
    model_name: str = ""

    @property
    def n_positions(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def labels(self) -> list[str]:
        return [layer_label(layer) for layer in self.layers]

    def entropy(self) -> np.ndarray:
        """[n_readouts, pos] entropy of each read-out's distribution, bits."""
        return -(np.exp(self.log_probs) * self.log_probs).sum(-1) / LN2

    def kl_to_final(self) -> np.ndarray:
        """[n_readouts, pos] KL(model's output || read-out), bits."""
        final = self.model_log_probs[None]  # [1, pos, d_vocab]
        return (np.exp(final) * (final - self.log_probs)).sum(-1) / LN2

    def cross_entropy(self) -> np.ndarray:
        """[n_readouts, pos] -log2 p(next character); NaN at the last position (no next character)."""
        out = np.full(self.log_probs.shape[:2], np.nan, dtype=np.float64)
        nxt = self.tokens[1:]  # [pos - 1]
        out[:, :-1] = -np.take_along_axis(self.log_probs[:, :-1], nxt[None, :, None], axis=-1)[..., 0] / LN2
        return out

    def statistic(self, name: str) -> np.ndarray:
        """[n_readouts, pos] of `entropy`, `kl` or `ce`."""
        if name == "entropy":
            return self.entropy()
        if name == "kl":
            return self.kl_to_final()
        if name == "ce":
            return self.cross_entropy()
        raise KeyError(f"unknown statistic {name!r}; choose one of {', '.join(STATISTICS)}")

    def _index(self, layer: Layer, position: int) -> tuple[int, int]:
        """(read-out row, position) of a layer label (negative blocks count from the end) and position."""
        labels = self.labels
        blocks = [label for label in labels if label != EMBED]
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and -len(blocks) <= layer < 0:
            layer = blocks[layer]
        if str(layer) not in labels:
            raise UnknownHookError(
                block_name(layer),
                message=f"unknown layer {layer!r}: this trajectory reads out layers {', '.join(labels)}",
            )
        if (
            not isinstance(position, (int, np.integer))
            or not -self.n_positions <= position < self.n_positions
        ):
            raise IndexError(
                f"position {position!r} out of range: the text has {self.n_positions} characters"
            )
        return labels.index(str(layer)), int(position) % self.n_positions

    def top_k(self, layer: Layer, position: int, k: int = 10) -> Any:
        """DataFrame of the `k` likeliest next characters at (layer, position): rank, token, id, prob."""
        import pandas as pd

        r, t = self._index(layer, position)
        lp = self.log_probs[r, t]  # [d_vocab]
        order = np.argsort(-lp, kind="stable")[:k]
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(order) + 1),
                "token": [self.vocab[i] for i in order],
                "id": order,
                "prob": np.exp(lp[order]),
            }
        )

    def top_k_by_layer(self, position: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """At one position, every read-out's top-k: tokens [n_readouts, k], probabilities [n_readouts, k]."""
        _, t = self._index(self.layers[-1], position)
        lp = self.log_probs[:, t]  # [n_readouts, d_vocab]
        order = np.argsort(-lp, axis=-1, kind="stable")[:, :k]  # [n_readouts, k]
        tokens = np.array([[self.vocab[i] for i in row] for row in order], dtype=object)
        return tokens, np.exp(np.take_along_axis(lp, order, axis=-1))

    def top1(self) -> np.ndarray:
        """[n_readouts, pos] display string of each cell's likeliest next character."""
        ids = self.log_probs.argmax(-1)  # [n_readouts, pos]
        return np.array([[self.vocab[i] for i in row] for row in ids], dtype=object)


@torch.no_grad()
def prediction_trajectory(
    lens: Lens,
    text: str,
    *,
    tokenizer: Any = None,
    fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
    edits: Sequence[Edit] = (),
    memory_budget_bytes: int | None = None,
) -> PredictionTrajectory:
    """Run the lens's model on `text` and read out every layer at every position.

    The run is the model as it stands, hooks attached with `model.hooks(...)` included, plus
    `fwd_hooks` and `edits` (`workbench.models.Edit`): a steered or patched run is lensed as modified,
    and `model_log_probs` is that run's output. Empty text, unknown characters and a text over the
    memory budget raise before anything runs.
    """
    from workbench.models.cache import memory_budget

    model = lens.model
    if hasattr(lens, "check_model"):
        lens.check_model(model)
    tokens = tokenize(model, text, tokenizer)  # [pos]
    tok = tokenizer_of(model, tokenizer)
    layers = lens.layers
    needed = (len(layers) + 1) * tokens.shape[0] * model.cfg.d_vocab * 4
    limit = memory_budget_bytes if memory_budget_bytes is not None else memory_budget(model.device)
    if needed > limit:
        raise MemoryBudgetError(
            needed,
            limit,
            what=f"a {len(layers)}-layer trajectory over {tokens.shape[0]} characters",
            hint="use a shorter text or raise memory_budget_bytes",
        )
    device = model.device
    hooks = lens.hooks()
    cache, logits, _ = collect_hooks(
        model, tokens[None].to(device), list(hooks.values()), fwd_hooks=fwd_hooks, edits=edits,
        memory_budget_bytes=memory_budget_bytes,
    )  # cache: hook -> [1, pos, ...]
    log_probs = torch.stack(
        [lens(cache[hooks[layer]][0], layer).float().log_softmax(-1) for layer in layers]
    )  # [n_readouts, pos, d_vocab]
    return PredictionTrajectory(
        text=text,
        tokens=tokens.numpy(),
        str_tokens=list(tok.to_strings(tokens)),
        vocab=list(tok.to_strings(torch.arange(model.cfg.d_vocab))),
        layers=list(layers),
        log_probs=log_probs.cpu().numpy(),
        model_log_probs=logits[0].float().log_softmax(-1).cpu().numpy(),
        lens_name=lens.name,
        model_name=model_name(model),
    )
