"""Path patching through the recurrent state: how much of position s's effect on the output at t
travels through one layer's recurrence alone, and how much through everything else.

Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) patches a sender and lets its change
reach the receiver along one path only, every other route held at the target run. In a recurrent
model information crosses positions only through the layers' states, so the paths from s to t are
read per layer. For each source position s < t and layer ℓ:

- **total**: the target run with the model's input at s (`blocks.0.hook_resid_pre`) taken from the
  source run; every path is open;
- **state** of layer ℓ: the target run with layer ℓ's input at s (`blocks.ℓ.hook_resid_pre`) set to
  its value in the *total* run, and layer ℓ's output (`blocks.ℓ.hook_resid_post`) held at the target
  run's values at positions s..t−1. The change enters layer ℓ at s, cannot leave it before t, so it
  reaches t only through layer ℓ's recurrence (every part of its state: LSTM h and c, Mamba's SSM
  and conv states); at t it flows up the residual stream through the layers above;
- **other** = total − Σ_ℓ state: with every layer chosen, the paths that leave one layer's state into
  the residual stream at a position between s and t and enter another layer's state (s → layer 0's
  state → position u → layer 1's state → t), plus what the paths do together beyond their sum.

The metric is read on the run truncated to positions 0..t, so a metric at position −1 reads t.
Every patch is a block-level hook on whole tensors, so each run is one fused forward; sources are
batched as in `activation_patching`, resuming at the batch's first source.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.patching.activation import (
    DEFAULT_BATCH,
    Direction,
    PositionPatch,
    baseline_runs,
    check_positions,
    normalize,
    resumable,
    resume,
    sides,
    source_values,
    table,
)
from workbench.analysis.patching.inputs import Hooks, Pair, check_pair, tile_rows
from workbench.analysis.patching.metrics import Metric, check_metric
from workbench.errors import UnknownHookError
from workbench.models.paths import ExecutionPath
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["PATHS", "check_layers", "check_target", "path_patching", "truncate"]

PATHS: tuple[str, ...] = ("total", "state", "other")  # the `hook` column of path patching's table


def check_target(target: int | None, length: int) -> int:
    """The receiving position as a non-negative index (default: the last); it needs a position before it."""
    if target is None:
        target = length - 1
    if isinstance(target, bool) or not hasattr(target, "__index__"):
        raise TypeError(f"target must be a position (int), got {target!r}")
    t = operator.index(target)
    if not -length <= t < length:
        raise IndexError(f"target position {t} is out of range for {length} token(s) (0..{length - 1})")
    return t % length


def check_layers(model: HookedModel, layers: Sequence[int] | None) -> list[int]:
    """Layer indices, sorted and unique (default: every layer); unknown ones raise `UnknownHookError`."""
    n = len(model.blocks)
    if layers is None:
        return list(range(n))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise ValueError("no layers given: give at least one, or None for all")
    for layer in chosen:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise UnknownHookError(
                str(layer), message=f"unknown layer {layer!r}: the model has {n} layer(s), 0..{n - 1}")
    return sorted({layer % n for layer in chosen})


def truncate(pair: Pair, length: int) -> Pair:
    """The pair's first `length` positions (its hooks are causal, so they apply unchanged)."""
    return Pair(pair.clean[:, :length], pair.corrupted[:, :length], pair.clean_hooks, pair.corrupted_hooks)


def path_patching(
    model: HookedModel,
    pair: Pair,
    metric: Metric,
    sources: int | Sequence[int] | None = None,
    target: int | None = None,
    layers: Sequence[int] | None = None,
    direction: Direction = "denoising",
    batch_size: int | None = None,
    path: ExecutionPath | None = None,
) -> pd.DataFrame:
    """The effect of each source position s < `target` (default: every one) on the metric at `target`
    (default: the last position), in total and through each layer's recurrent state alone (module
    notes). A tidy table: hook ∈ `PATHS`, layer −1 for "total" and "other", position = s, effect
    = metric(patched) − metric(target run), normalized by metric(source) − metric(target run).
    `df.attrs` holds the target position, direction and the two runs' metrics."""
    pair = check_pair(model, pair)
    source_side, target_side = sides(direction)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    t = check_target(target, pair.clean.shape[1])
    if t == 0:
        raise ValueError("target position 0 has no earlier position to receive from: choose target ≥ 1")
    chosen_sources = sorted(set(check_positions(sources, t)))
    chosen_layers = check_layers(model, layers)
    pair = truncate(pair, t + 1)
    n, length = pair.clean.shape
    enter = [get_act_name("resid_pre", layer) for layer in range(len(model.blocks))]
    leave = {layer: get_act_name("resid_post", layer) for layer in chosen_layers}
    clean_metric, corrupted_metric, logits_of = baseline_runs(model, pair, metric, path)
    baseline, other = (corrupted_metric, clean_metric) if direction == "denoising" else (clean_metric, corrupted_metric)
    _, inputs = source_values(model, pair, source_side, [enter[0]], path)  # the source run's input [n, pos, d]
    _, held = source_values(model, pair, target_side, list(leave.values()), path)  # target run's outputs
    tokens, target_hooks = pair.run(target_side)
    sweep = SourceSweep(model, tokens, target_hooks, logits_of[target_side], metric, path)
    size = DEFAULT_BATCH if batch_size is None else batch_size
    rows = []
    for start in range(0, len(chosen_sources), size):
        cells = chosen_sources[start:start + size]
        first = min(cells) if resumable(target_hooks) else 0
        at_source = sweep.mask(cells, first, lambda s: (s, s + 1))  # [k n, pos − first]
        total, reached = sweep.run(cells, first, [(enter[0], PositionPatch(inputs[enter[0]][:, first:], at_source))],
                                   names=[enter[layer] for layer in chosen_layers])
        through: dict[int, Tensor] = {}
        held_mask = sweep.mask(cells, first, lambda s: (s, t))
        for layer in chosen_layers:
            patches = [(enter[layer], PositionPatch(reached[enter[layer]], at_source)),  # rows are their own source
                       (leave[layer], PositionPatch(held[leave[layer]][:, first:], held_mask))]
            through[layer], _ = sweep.run(cells, first, patches)
        for c, s in enumerate(cells):
            effect = float(total[c]) - baseline
            rows.append((-1, s, "total", enter[0], effect, normalize(effect, baseline, other)))
            state_sum = 0.0
            for layer in chosen_layers:
                state = float(through[layer][c]) - baseline
                state_sum += state
                rows.append((layer, s, "state", enter[layer], state, normalize(state, baseline, other)))
            rest = effect - state_sum
            rows.append((-1, s, "other", "", rest, normalize(rest, baseline, other)))
    df = table(rows, direction, clean_metric, corrupted_metric)
    df.attrs.update(target=t, layers=chosen_layers)
    return df


class SourceSweep:
    """Batched runs of the target side, one copy of the n pairs per source position (row c·n + i is
    source c, pair i), resumed at a first position and measured by the metric."""

    def __init__(self, model: HookedModel, tokens: Tensor, hooks: Hooks, target_logits: Tensor, metric: Metric,
                 path: ExecutionPath | None):
        self.model, self.tokens, self.hooks, self.path = model, tokens, hooks, path
        self.target_logits, self.metric = target_logits, metric  # [n, pos, vocab]
        self.n, self.length = tokens.shape

    def mask(self, cells: Sequence[int], first: int, span: object) -> Tensor:
        """[k n, pos − first] bool: for source c, the positions `span(s)` = (start, stop) of its copy."""
        mask = torch.zeros(len(cells), self.n, self.length - first, dtype=torch.bool)
        for c, s in enumerate(cells):
            lo, hi = span(s)  # type: ignore[operator]
            mask[c, :, lo - first:hi - first] = True
        return mask.reshape(len(cells) * self.n, self.length - first)

    def run(self, cells: Sequence[int], first: int, patches: list, names: Sequence[str] = ()
            ) -> tuple[Tensor, dict[str, Tensor]]:
        """(metric per source [k], activations at `names` [k n, pos − first, ...]) under `patches`."""
        k = len(cells)
        with torch.no_grad():
            logits, cache = resume(self.model, self.tokens, self.hooks, first, k, patches, self.path, names)
            logits = torch.cat([tile_rows(self.target_logits[:, :first], k * self.n), logits], dim=1)
            measured = check_metric(self.metric, logits).reshape(k, self.n).mean(1)  # [k]
        return measured, cache
