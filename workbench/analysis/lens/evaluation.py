"""Per-layer evaluation of lenses on held-out text, as Belrose et al. 2023 (Fig. 3) and Paulo,
Marshall & Belrose 2024 (Fig. 1) report it: KL to the model's final distribution, cross-entropy
against the true next token, and top-1 agreement with the model's own prediction.

All losses are in bits per token (for the workbench's character models: bits per character).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from workbench.analysis.lens.logit_lens import (
    EMBED,
    Lens,
    LogitLens,
    collect_hooks,
    layer_label,
    model_name,
)
from workbench.analysis.lens.streaming import corpus_text, encode_corpus, streams
from workbench.analysis.lens.tuned_lens import kl_divergence

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["METRICS", "LensEvaluation", "evaluate_lenses", "named_lenses"]

LN2 = math.log(2.0)
METRICS = {
    "kl_bits": "KL(final || lens), bits",
    "ce_bits": "cross-entropy vs next token, bits",
    "top1_agreement": "top-1 agreement with the final layer",
}


@dataclass
class LensEvaluation:
    """Per-lens, per-layer scores: `table` has columns lens, layer, kl_bits, ce_bits, top1_agreement."""

    model_name: str
    table: Any  # pandas DataFrame, one row per (lens, layer) in depth order
    model_ce_bits: float  # the model's own cross-entropy on the same positions
    n_tokens: int  # positions scored

    def metric(self, name: str = "kl_bits") -> Any:
        """One metric as a layer x lens table (rows in depth order)."""
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
        wide = self.table.pivot(index="layer", columns="lens", values=name)
        order = sorted(
            dict.fromkeys(self.table.layer), key=lambda label: -1 if label == EMBED else int(label)
        )
        return wide.loc[order, list(dict.fromkeys(self.table.lens))]

    @property
    def lenses(self) -> list[str]:
        return list(dict.fromkeys(self.table.lens))

    def __str__(self) -> str:
        head = (
            f"{self.model_name}: {self.n_tokens:,} held-out tokens; model cross-entropy "
            f"{self.model_ce_bits:.3f} bits"
        )
        return head + "\n" + self.table.to_string(index=False, float_format=lambda v: f"{v:.3f}")

    def _repr_html_(self) -> str:
        return (
            f"<p>{self.model_name}: {self.n_tokens:,} held-out tokens; model cross-entropy "
            f"{self.model_ce_bits:.3f} bits</p>" + self.table.to_html(index=False, float_format="%.3f")
        )


def named_lenses(model: HookedModel, lenses: Lens | Sequence[Lens] | Mapping[str, Lens] | None) -> dict[str, Lens]:
    """Lenses by display name (None: the logit lens); each must belong to `model`."""
    if lenses is None:
        lenses = [LogitLens(model)]
    if isinstance(lenses, Mapping):
        items = dict(lenses)
    else:
        seq = [lenses] if isinstance(lenses, Lens) else list(lenses)
        items = {}
        for lens in seq:
            name, k = lens.name, 2
            while name in items:
                name, k = f"{lens.name} ({k})", k + 1
            items[name] = lens
    if not items:
        raise ValueError("no lenses given")
    for name, lens in items.items():
        if hasattr(lens, "check_model"):
            lens.check_model(model)  # a tuned lens for another model raises LensMismatchError
        elif lens.model is not model:
            raise ValueError(f"lens {name!r} belongs to another model")
    return items


@torch.no_grad()
def evaluate_lenses(
    model: HookedModel,
    text: Any,
    lenses: Lens | Sequence[Lens] | Mapping[str, Lens] | None = None,
    *,
    batch_size: int = 8,
    seq_len: int = 256,
    max_chars: int | None = None,
    fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
    memory_budget_bytes: int | None = None,
) -> LensEvaluation:
    """Score each lens at each read-out on `text` (a str, or a `Corpus`: its validation split).

    The text is read as `batch_size` contiguous streams with the state carried across windows (as
    the model is trained and evaluated); every position with a next token is scored. Hooks attached
    with `model.hooks(...)` and `fwd_hooks` act on every window: the lenses and the "final"
    distribution they are scored against are both the modified run's.
    """
    import pandas as pd

    items = named_lenses(model, lenses)
    source = corpus_text(text, "validation")
    if max_chars is not None:
        source = source[:max_chars]
    ids = encode_corpus(model.tokenizer, source)  # [n]
    data = streams(ids, batch_size, 2)  # [streams, length]
    hooks = {name: lens.hooks() for name, lens in items.items()}  # lens -> {layer: hook}
    names = [hook for per_lens in hooks.values() for hook in per_lens.values()]
    totals = {(name, layer): [0.0, 0.0, 0.0] for name in items for layer in hooks[name]}  # kl, ce, agree
    model_nats, count, state = 0.0, 0, None
    device = model.device
    for start in range(0, data.shape[1] - 1, seq_len):
        targets = data[:, start + 1 : start + seq_len + 1].to(device)  # [streams, w]
        inputs = data[:, start : start + targets.shape[1]].to(device)  # [streams, w]
        cache, logits, state = collect_hooks(
            model, inputs, names, state, fwd_hooks=fwd_hooks, memory_budget_bytes=memory_budget_bytes
        )
        final = logits.float().log_softmax(-1)  # [streams, w, d_vocab]
        final_top = final.argmax(-1)  # [streams, w]
        model_nats += F.nll_loss(final.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
        for name, lens in items.items():
            for layer, hook in hooks[name].items():
                lp = lens(cache[hook], layer).float().log_softmax(-1)  # [streams, w, d_vocab]
                total = totals[(name, layer)]
                total[0] += kl_divergence(final, lp).sum().item()
                total[1] += F.nll_loss(lp.flatten(0, 1), targets.flatten(), reduction="sum").item()
                total[2] += (lp.argmax(-1) == final_top).sum().item()
    rows = [
        {
            "lens": name,
            "layer": layer_label(layer),
            "kl_bits": kl / count / LN2,
            "ce_bits": ce / count / LN2,
            "top1_agreement": agree / count,
        }
        for (name, layer), (kl, ce, agree) in totals.items()
    ]
    return LensEvaluation(model_name(model), pd.DataFrame(rows), model_nats / count / LN2, count)
