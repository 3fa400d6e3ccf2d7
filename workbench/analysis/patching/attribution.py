"""Attribution patching (Nanda 2023, *Attribution patching*; Kramár et al. 2024, *AtP*): the
first-order estimate of every activation-patching effect at once,
effect(X_t) ≈ dM/dX_t · (X_t[source] − X_t[target]),
from one forward and one backward pass of the target run and one forward pass of the source run.

dM/dX_t is the hook contract's gradient (docs/design.md, "Gradients through everything"): an additive
change of X at t carried through every later step, gates and states included, which is what patching
X at t alone does to first order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.patching.activation import (
    Direction,
    check_channels,
    check_positions,
    normalize,
    resolve_sites,
    sides,
    source_values,
    table,
)
from workbench.analysis.patching.inputs import Hooks, Pair, check_pair
from workbench.analysis.patching.metrics import Metric, check_metric
from workbench.models import read_only
from workbench.models.paths import ExecutionPath
from workbench.models.transformer_lens_compat import HookPoint

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["attribution_patching", "metric_gradients"]


def metric_gradients(
    model: HookedModel, tokens: Tensor, hooks: Hooks, metric: Metric,
    names: Sequence[str], path: ExecutionPath | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One forward and backward pass of `tokens` under `hooks`: (metric [batch], values, gradients of
    the metric's sum), values and gradients [batch, pos, *shape] per name. Parameters' `.grad` are left
    as they were."""
    values: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}

    def record(x: Tensor, hook: HookPoint) -> None:
        values[hook.name] = x.detach()

    def record_grad(g: Tensor, hook: HookPoint) -> None:
        grads[hook.name] = g.detach()

    params = list(model.parameters())  # type: ignore[attr-defined]
    saved = [p.grad for p in params]
    try:
        with torch.enable_grad(), model.hooks(
            fwd_hooks=[*hooks, *((n, read_only(record)) for n in names)],
            bwd_hooks=[(n, record_grad) for n in names],
        ):
            logits = model(tokens, path=path)  # [batch, pos, vocab]
            measured = check_metric(metric, logits)  # [batch]
            measured.sum().backward()
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    for name in names:  # a value the metric does not depend on differentiably has gradient zero
        grads.setdefault(name, torch.zeros_like(values[name]))
    return measured.detach(), values, grads


def attribution_patching(
    model: HookedModel,
    pair: Pair,
    metric: Metric,
    hooks: str | Sequence[str] = ("resid_pre", "resid_post"),
    layers: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    direction: Direction = "denoising",
    path: ExecutionPath | None = None,
) -> pd.DataFrame:
    """Estimated patching effects for every (hook, layer, position), in `activation_patching`'s table:
    effect ≈ grad · (source − target) at the target run, averaged over the pairs."""
    pair = check_pair(model, pair)
    source_side, target_side = sides(direction)
    sites = resolve_sites(model, hooks, layers)
    n, length = pair.clean.shape
    chosen = check_positions(positions, length)
    names = list(dict.fromkeys(s.name for s in sites))
    # two runs in all: the source side's logits and values, the target side's with the gradients
    source_logits, source = source_values(model, pair, source_side, names, path)
    tokens, target_hooks = pair.run(target_side)
    target_metric, target, grads = metric_gradients(model, tokens, target_hooks, metric, names, path)
    other, baseline = float(check_metric(metric, source_logits).mean()), float(target_metric.mean())
    clean_metric, corrupted_metric = (other, baseline) if direction == "denoising" else (baseline, other)
    rows = []
    for site in sites:
        delta = source[site.name].to(grads[site.name]) - target[site.name]  # [n, pos, *shape]
        product = grads[site.name] * delta
        chans = check_channels(model, site.name, channels)
        if chans is not None:
            product = product[:, :, chans]
        per_position = product.reshape(n, length, -1).sum(-1).mean(0)  # [pos]
        for position in chosen:
            effect = float(per_position[position])
            rows.append((site.layer, position, site.hook, site.name, effect, normalize(effect, baseline, other)))
    return table(rows, direction, clean_metric, corrupted_metric)
