"""Tuned-lens fitting one translator per unit of work, so the layers can be fanned out (`workbench.distributed`).

Each read-out's translator enters only its own KL term, so the translators train independently but
for one coupling: the joint fit clips the gradient norm over all of them together. Fitted one per
unit, each clips its own gradient; everything else (data, schedule, optimiser) is the joint recipe.
Every unit reruns the model's forward over the same windows; the lens's own work (decoding through
the unembedding, its backward) is what divides among the workers (docs/cluster.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from workbench.analysis.lens.logit_lens import Layer, resolve_readout
from workbench.analysis.lens.tuned_lens import fit_translators

if TYPE_CHECKING:
    from workbench.analysis.lens.tuned_lens import TunedLens
    from workbench.distributed import Executor

__all__ = ["LayerFit", "fit_per_layer"]


@dataclass(frozen=True)
class LayerFit:
    """What every layer's unit shares: the lens (and so its model), the text and the fit's settings."""

    lens: TunedLens
    text: Any
    settings: dict[str, Any]


def fit_layer(job: LayerFit, layer: Layer) -> tuple[dict[str, Tensor], list[dict[str, Any]], dict[str, Any]]:
    """One read-out's unit: (its translator's weights, its history, the training settings)."""
    lens = job.lens
    history, training = fit_translators(lens, job.text, [layer], progress=False, **job.settings)
    translator = lens.translators[resolve_readout(lens.model, layer)]
    return {k: v.detach().clone() for k, v in translator.state_dict().items()}, history, training


def fit_per_layer(lens: TunedLens, text: Any, executor: Executor, **settings: Any) -> TunedLens:
    """Fit `lens` one translator per unit on `executor`; fills its translators, `history_` and `training_`.

    `settings` are `TunedLens.fit`'s (steps, batch_size, seq_len, lr, momentum, weight_decay,
    grad_clip, memory_budget_bytes); the units' threads are the executor's.
    """
    progress = settings.pop("progress", True)
    settings.pop("threads", None)
    layers = lens.translated_layers
    fits = executor.map(fit_layer, layers, context=LayerFit(lens, text, settings), desc=lens.name, progress=progress)
    history: list[dict[str, Any]] = []
    for layer, (weights, layer_history, _) in zip(layers, fits, strict=True):
        lens.translators[resolve_readout(lens.model, layer)].load_state_dict(weights)
        for step, row in enumerate(layer_history):
            if step == len(history):
                history.append({"step": row["step"], "lr": row["lr"]})
            history[step][str(layer)] = row[str(layer)]
    lens.history_ = history
    lens.training_ = {**fits[0][2], "fitted": "one translator per unit, each clipping its own gradient"}
    return lens
