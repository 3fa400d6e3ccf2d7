"""Flow knockout (Endy et al. 2025, *Mamba Knockout*): block what position s passes to position t
through a layer's recurrence, by zeroing entry (t, s) of the layer's implicit attention.

A gated-linear layer's output at t is y_t = Σ_j Ã_{t,j} v_j + bias_t (Zimerman et al. 2024;
`workbench.analysis.implicit_attention`), Ã computed with every gate at its value in the run. The
knockout removes the term Ã_{t,s} v_s from y_t and maps the change through the layer's read-out to
its output at t (`hook_mixer_out`); the run then goes on, so the change reaches the logits through
the layers above. Only the read at t changes: the state the layer carries past t keeps s's write.

Where it is exact. The knocked-out output at t equals Σ_{j≠s} Ã_{t,j} v_j + bias_t exactly for S6
(ours, Hugging Face Mamba and FalconMamba: conv, SSM and D together), minGRU, minLSTM, GRU, RWKV-4
(the numerator only: the denominator keeps s, as zeroing an entry of a normalised map does) and
RecurrentGemma's RG-LRU and local-attention blocks, whose output reaches the residual through a
linear projection. For the LSTM the removed term is exact in c_t, and the read h_t = o_t tanh(c_t)
is recomputed exactly. For Mamba2 the gated RMSNorm between y and out_proj keeps its 1/rms factor at
the run's value ("normed" mode), so the change is first order in the norm. Everywhere the gates
themselves (Δ, B, C, the forget gates) keep what they took from s, as in Mamba Knockout.

With several layers knocked out together (`together=True`), each layer's map is computed in the run
with the layers below already knocked out, bottom-up, so the result is the exact joint knockout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.implicit_attention.api import attend, family_of, record
from workbench.analysis.patching.activation import DEFAULT_BATCH, check_positions, resume
from workbench.analysis.patching.inputs import as_batch, tile_rows
from workbench.analysis.patching.metrics import Metric, check_metric
from workbench.analysis.patching.paths import check_layers, check_target
from workbench.models.paths import ExecutionPath
from workbench.models.transformer_lens_compat import HookPoint
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["FLOW_MODES", "flow_knockout", "removed_output"]

# the implicit-attention mode whose output reaches the residual stream through a linear read-out
FLOW_MODES: dict[str, str] = {"mamba2": "normed", "falcon_h1": "normed"}


class AddAt:
    """Adds `delta[r]` [d_model] to row r of `hook_mixer_out` at one position (relative to the run's
    start); a pure, position-local edit."""

    def __init__(self, delta: Tensor, position: int):
        self.delta, self.position = delta, position  # [rows, d_model]

    def __call__(self, x: Tensor, hook: HookPoint) -> Tensor:
        out = x.clone()  # [rows, pos, d_model]
        out[:, self.position] += self.delta.to(x)
        return out


def removed_output(model: HookedModel, layer: int, cache: dict[str, Tensor], target: int,
                   sources: Sequence[int]) -> Tensor:
    """The change of `hook_mixer_out` at `target` when entry (target, s) of the layer's implicit attention
    is zeroed, for each s: [batch, len(sources), d_model], from a cache of the family's hooks."""
    family = family_of(model)
    mode = FLOW_MODES.get(model.cfg.family, "exact")
    form = family.form(model, cache, layer, mode)
    query = torch.tensor([target], device=form.value.device)
    maps, _ = attend(form, queries=query)  # [b, d, 1, pos]
    columns = torch.tensor(list(sources), device=form.value.device)
    term = maps[:, :, 0, columns] * form.value[:, :, columns]  # [b, d, S]: Ã_{t,s} v_s
    if model.cfg.family == "lstm":  # the read-out h = o tanh(c) is nonlinear in the knocked-out c_t
        c = cache[get_act_name("c", layer)][:, target]  # [b, d]
        o = cache[get_act_name("o", layer)][:, target]  # [b, d]
        change = o[:, None] * (torch.tanh(c[:, None] - term.transpose(1, 2)) - torch.tanh(c)[:, None])  # [b, S, d]
        return change @ model.blocks[layer].mixer.W_out.weight.detach().to(change).T  # [b, S, d_model]
    if form.projection is None:
        raise NotImplementedError(f"no linear read-out known for a {model.cfg.family!r} layer's implicit attention")
    return -term.transpose(1, 2) @ form.projection.to(term).T  # [b, S, d_model]


def flow_knockout(
    model: HookedModel,
    tokens: Tensor | Sequence[int],
    metric: Metric,
    sources: int | Sequence[int] | None = None,
    target: int | None = None,
    layers: Sequence[int] | None = None,
    together: bool = False,
    batch_size: int | None = None,
    path: ExecutionPath | None = None,
) -> pd.DataFrame:
    """For each source s ≤ `target` (default: every one) and each of `layers` (default: all), the metric
    at `target` (default: the last position) with the flow s → target knocked out in that layer, minus
    the plain run's (module notes). With `together`, one row per source with every chosen layer knocked
    out at once (layer −1). Columns: layer, position (= s), hook ("flow"), name, metric, effect;
    `df.attrs` holds the plain metric and the target."""
    try:
        family_of(model)
    except NotImplementedError as error:
        raise NotImplementedError(
            f"{error}. Flow knockout needs an implicit-attention form; `path_patching` measures what a "
            "position passes through any layer's recurrence") from None
    ids = as_batch(tokens, "tokens").to(model.device)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    t = check_target(target, ids.shape[1])
    ids = ids[:, :t + 1]
    n = ids.shape[0]
    chosen_sources = sorted(set(check_positions(sources, t + 1)))
    chosen_layers = check_layers(model, layers)
    mode = FLOW_MODES.get(model.cfg.family, "exact")
    with torch.no_grad():
        plain_logits = model(ids, path=path)  # [n, t + 1, vocab]
        plain = float(check_metric(metric, plain_logits).mean())
        cache = record(model, ids, chosen_layers, mode)
    size = DEFAULT_BATCH if batch_size is None else batch_size
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(chosen_sources), size):
        cells = chosen_sources[start:start + size]
        k = len(cells)
        if together:
            knockouts = [(-1, "all layers", joint_edits(model, ids, cache, t, cells, chosen_layers, mode, path))]
        else:
            knockouts = []
            for layer in chosen_layers:
                delta = removed_output(model, layer, cache, t, cells)  # [n, k, d_model]
                name = get_act_name("mixer_out", layer)
                knockouts.append((layer, name, [(name, AddAt(delta.transpose(0, 1).reshape(k * n, -1), 0))]))
        for layer, name, edits in knockouts:
            measured = knocked_metric(model, ids, plain_logits, metric, k, edits, path).tolist()  # [k]
            rows.extend((layer, s, "flow", name, m, m - plain) for s, m in zip(cells, measured, strict=True))
    df = pd.DataFrame(rows, columns=["layer", "position", "hook", "name", "metric", "effect"])
    df.attrs.update(metric=plain, target=t, together=together)
    return df


def knocked_metric(model: HookedModel, ids: Tensor, plain_logits: Tensor, metric: Metric, copies: int,
                   edits: list, path: ExecutionPath | None) -> Tensor:
    """The metric [copies] (mean over the n rows of each copy) of the run with `edits` at its last
    position t: positions before t are the plain run's, so the run resumes at t."""
    t = ids.shape[1] - 1
    with torch.no_grad():
        logits, _ = resume(model, ids, (), t, copies, edits, path)  # [copies n, 1 (t + 1 if t = 0), vocab]
        logits = torch.cat([tile_rows(plain_logits[:, :t], logits.shape[0]), logits], dim=1)
        return check_metric(metric, logits).reshape(copies, ids.shape[0]).mean(1)


def joint_edits(model: HookedModel, ids: Tensor, cache: dict[str, Tensor], t: int, cells: Sequence[int],
                layers: Sequence[int], mode: str, path: ExecutionPath | None) -> list:
    """The mixer-output edits at t that knock out s → t in every layer at once (row c·n + i: source
    cells[c], pair i), each layer's map taken in the run with the layers below knocked out."""
    family = family_of(model)
    n, k = ids.shape[0], len(cells)
    edits: list = []
    for index, layer in enumerate(layers):
        if index == 0:
            here = cache
        else:  # the layer's hooks at t under the knockouts below; positions before t are the plain run's
            names = family.hook_names(layer, mode, model)
            with torch.no_grad():
                _, at_t = resume(model, ids, (), t, k, edits, path, names)
            specs = model.hook_specs()
            here = {name: joined(cache[name], at_t[name], t, k * n, specs[name][0][1:2] == ("pos",))
                    for name in names}
        delta = per_row_removed(model, layer, here, t, cells, n)  # [k n, d_model]
        edits.append((get_act_name("mixer_out", layer), AddAt(delta, 0)))
    return edits


def joined(plain: Tensor, at_t: Tensor, t: int, rows: int, per_position: bool) -> Tensor:
    """A hook's values over positions 0..t for `rows` rows: the plain run's before t, tiled, then the
    rows' own at t; a hook without a position axis (an initial state) is the plain run's, tiled."""
    if per_position:
        return torch.cat([tile_rows(plain[:, :t], rows), at_t], dim=1)
    return tile_rows(plain, rows)


def per_row_removed(model: HookedModel, layer: int, cache: dict[str, Tensor], t: int, cells: Sequence[int],
                    n: int) -> Tensor:
    """`removed_output` where row c·n + i of the cache knocks out source cells[c]: [k n, d_model]."""
    rows = next(iter(cache.values())).shape[0]
    if rows == n:  # the plain run's cache: every source from the same rows
        return removed_output(model, layer, cache, t, cells).transpose(0, 1).reshape(len(cells) * n, -1)
    every = removed_output(model, layer, cache, t, cells)  # [k n, k, d_model]
    pick = torch.arange(rows) // n  # row r knocks out source cells[r // n]
    return every[torch.arange(rows), pick]
