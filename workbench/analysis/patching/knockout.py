"""Knockout: ablate a hooked quantity (a state component, a gate, the residual stream) at chosen
positions, by zero or by its mean over the run, and measure what the metric loses.

The ablated value replaces the quantity at those positions only; the recurrence carries the change
forward (causal replay), so knocking out a state at t shows what the memory written by t is used for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.patching.activation import (
    PositionPatch,
    check_channels,
    check_positions,
    resolve_sites,
    run_logits,
)
from workbench.analysis.patching.inputs import as_batch
from workbench.analysis.patching.metrics import Metric, check_metric
from workbench.models.paths import ExecutionPath

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["ABLATIONS", "Ablation", "knockout"]

Ablation = Literal["zero", "mean"]
ABLATIONS: tuple[str, ...] = ("zero", "mean")


def knockout(
    model: HookedModel,
    tokens: Tensor | Sequence[int],
    metric: Metric,
    hooks: str | Sequence[str],
    layers: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    ablation: Ablation = "zero",
    path: ExecutionPath | None = None,
) -> pd.DataFrame:
    """For each (hook, layer): metric with the quantity ablated at all of `positions` (default: every
    position; `channels` of its first dimension, or all) minus the metric of the plain run.

    "mean" replaces by the mean over the batch and every position of the plain run. Columns: layer,
    hook, name, ablation, metric, effect; `df.attrs["metric"]` is the plain run's.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")
    ids = as_batch(tokens, "tokens").to(model.device)
    n, length = ids.shape
    sites = resolve_sites(model, hooks, layers)
    chosen = check_positions(positions, length)
    names = [s.name for s in sites]
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=names, path=path)
        plain = float(check_metric(metric, logits).mean())
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask[:, chosen] = True
    rows = []
    for site in sites:
        value = cache[site.name]  # [n, pos, *shape]
        if ablation == "zero":
            replacement = torch.zeros_like(value)
        else:
            replacement = value.mean(dim=(0, 1), keepdim=True).expand_as(value).contiguous()
        patch = PositionPatch(replacement, mask, check_channels(model, site.name, channels))
        with torch.no_grad():
            measured = float(check_metric(metric, run_logits(model, ids, ((site.name, patch),), path)).mean())
        rows.append((site.layer, site.hook, site.name, ablation, measured, measured - plain))
    df = pd.DataFrame(rows, columns=["layer", "hook", "name", "ablation", "metric", "effect"])
    df.attrs["metric"] = plain
    return df
