"""Activation patching (Meng et al. 2022; Heimersheim & Nanda 2024): run the target side of a
clean/corrupted pair with one activation taken from the source side, and measure the metric.

Denoising patches clean activations into the corrupted run (does this site suffice to restore the
answer?); noising patches corrupted activations into the clean run (is it necessary?). A sweep
covers layer × position × hook, for any per-position hook: the residual stream, the mixer's
output, any gate or state, whole or a channel subset.

The sweep is batched: the target run is repeated once per patched position and one `PositionPatch`
hook patches a different position in each copy, so a layer × position sweep is a few forward
passes instead of one per cell. Each batch resumes from the state just before its first patched
position (`initial_state=`), so positions no patch can reach are not rerun. A per-row position
patch is causal and pure, as the recurrence's replay of editing hooks requires (docs/design.md,
"The hook contract").
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.patching.inputs import HookFn, Hooks, Pair, check_pair, tile_rows
from workbench.analysis.patching.metrics import Metric, check_metric
from workbench.analysis.steering.vectors import hook_shape
from workbench.errors import UnknownHookError
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import PositionWiseHook
from workbench.models.transformer_lens_compat import HookPoint
from workbench.utils import BLOCK_HOOKS, get_act_name, hook_layer

if TYPE_CHECKING:
    from workbench.distributed import Executor
    from workbench.models.protocol import HookedModel

__all__ = [
    "COLUMNS",
    "BATCH_BYTES",
    "DEFAULT_BATCH",
    "DIRECTIONS",
    "Direction",
    "PositionPatch",
    "Site",
    "activation_patching",
    "baseline_metrics",
    "check_positions",
    "patched_logits",
    "resolve_sites",
    "top_predictions",
]

Direction = Literal["denoising", "noising"]
DIRECTIONS: tuple[str, ...] = ("denoising", "noising")
# the tidy table every patching method returns, one row per (hook, layer, position)
COLUMNS: tuple[str, ...] = ("layer", "position", "hook", "name", "effect", "normalized_effect")
# Positions patched per forward pass by default. Each batch resumes at its first patched position,
# so smaller batches rerun fewer positions, and a patched mixer quantity is replayed step by step
# with the whole [rows, pos, ...] tensor handed to the hook at each step, so fewer rows stay in
# cache; more batches cost one forward call each (measured: benchmarks/patching_results.md).
DEFAULT_BATCH = 32
# ... and at most this many bytes of one layer's hooked values and the logits
BATCH_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Site:
    """One hook a sweep patches: its layer (−1 outside the blocks), short name and full name."""

    layer: int
    hook: str
    name: str


def sides(direction: str) -> tuple[str, str]:
    """(source, target): denoising copies clean into corrupted, noising corrupted into clean."""
    if direction == "denoising":
        return "clean", "corrupted"
    if direction == "noising":
        return "corrupted", "clean"
    raise ValueError(f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}")


def _short(name: str) -> str:
    return name.rsplit("hook_", 1)[1]


def resolve_sites(model: HookedModel, hooks: str | Sequence[str], layers: Sequence[int] | None = None) -> list[Site]:
    """Every (layer, hook) a sweep patches. Short names (`resid_pre`, `resid_post`, `mixer_out`, any
    mixer quantity such as `c`, `f` or `state`) are taken in each of `layers` (default: every layer that
    has them); full names stand for themselves. Unknown names and layers raise `UnknownHookError`."""
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise ValueError("no hooks given: name at least one, e.g. hooks=['resid_post']")
    n = len(model.blocks)
    if layers is not None:
        for layer in layers:
            if not isinstance(layer, int) or not -n <= layer < n:
                raise UnknownHookError(
                    str(layer), message=f"unknown layer {layer!r}: the model has {n} layer(s), 0..{n - 1}")
    chosen = list(range(n)) if layers is None else [int(layer) % n for layer in layers]
    specs = model.hook_specs()
    sites: list[Site] = []
    for hook in hooks:
        if not isinstance(hook, str) or not hook:
            raise UnknownHookError(str(hook), message=f"hook must be a non-empty name, got {hook!r}")
        if hook in model.hook_dict or hook in ("embed",):
            name = get_act_name(hook)
            found = [Site(-1 if hook_layer(name) is None else int(hook_layer(name)), _short(name), name)]
        else:
            layer_type = None if hook in BLOCK_HOOKS else "mixer"
            found = [Site(layer, hook, get_act_name(hook, layer, layer_type)) for layer in chosen]
            found = [s for s in found if s.name in model.hook_dict]
            if layers is not None and len(found) < len(chosen):
                missing = sorted(set(chosen) - {s.layer for s in found})
                raise UnknownHookError(hook, message=f"hook {hook!r} does not exist in layer(s) {missing}")
        if not found:
            quantities = sorted({q for block in model.blocks for q in block.mixer.quantities})
            close = difflib.get_close_matches(hook, [*BLOCK_HOOKS, *quantities, *model.hook_dict], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownHookError(
                hook,
                message=(f"unknown hook {hook!r}: give a full hook name (see model.hook_table()) or a short one: "
                         f"{', '.join(BLOCK_HOOKS)}, or a mixer quantity ({', '.join(quantities)}){hint}"),
            )
        for site in found:
            dims = specs[site.name][0]
            if len(dims) < 2 or dims[1] != "pos":
                raise UnknownHookError(
                    site.name, message=f"hook {site.name!r} has no position axis (dims {list(dims)})")
        sites.extend(found)
    return sites


def check_positions(positions: int | Sequence[int] | None, length: int) -> list[int]:
    """Positions as non-negative indices (default: all `length`); out of range raises IndexError."""
    if positions is None:
        return list(range(length))
    chosen = [positions] if isinstance(positions, int) else list(positions)
    if not chosen:
        raise ValueError("no positions given: give at least one, or None for all")
    out = []
    for p in chosen:
        if isinstance(p, bool) or not hasattr(p, "__index__"):
            raise TypeError(f"positions must be ints, got {p!r}")
        p = operator.index(p)
        if not -length <= p < length:
            raise IndexError(f"position {p} is out of range for {length} token(s) (0..{length - 1})")
        out.append(p % length)
    return out


def check_channels(model: HookedModel, name: str, channels: Sequence[int] | None) -> list[int] | None:
    """Channel indices into the first per-position dimension of `name` (None: the whole activation)."""
    if channels is None:
        return None
    chosen = [int(c) for c in channels]
    shape = hook_shape(model, name)
    if not shape:
        raise ValueError(f"hook {name!r} has no channel dimension ([batch, pos] only): leave channels=None")
    size = shape[0]
    if not chosen:
        raise ValueError("channels is empty: give at least one channel index, or None for all")
    bad = [c for c in chosen if not -size <= c < size]
    if bad:
        raise IndexError(f"channel(s) {bad} out of range for hook {name!r} with {size} channels")
    return sorted({c % size for c in chosen})


class PositionPatch(PositionWiseHook):
    """Row r of the batch takes `source[r % n]` at the positions `mask[r]` selects (only `channels` of
    the first per-position dimension, if given). Position-wise, with its positions declared: the
    recurrence runs the fast kernel between them (linear time) instead of a step-by-step replay."""

    def __init__(self, source: Tensor, mask: Tensor, channels: Sequence[int] | None = None):
        super().__init__(self.call_at)
        self.source = source  # [n, pos, *shape], detached
        self.mask = mask  # [rows, pos] bool
        self.channels = None if channels is None else list(channels)
        rows, positions = mask.nonzero(as_tuple=True)  # [k] each: the patched (row, position) pairs
        self.rows, self.positions, self.pairs = rows, positions, rows % source.shape[0]
        self.edit_positions = tuple(sorted(set(positions.tolist())))
        self._cast: Tensor | None = None

    def call_at(self, x: Tensor, hook: HookPoint, pos: range) -> Tensor:
        """`x` [rows, len(pos), *shape] holds the absolute positions `pos`; patch those among them."""
        if self._cast is None or self._cast.dtype != x.dtype or self._cast.device != x.device:
            self._cast = self.source.to(device=x.device, dtype=x.dtype)
            self.rows, self.positions, self.pairs = (t.to(x.device) for t in (self.rows, self.positions, self.pairs))
        inside = (self.positions >= pos.start) & (self.positions < pos.stop)  # [k]
        rows, positions, pairs = self.rows[inside], self.positions[inside], self.pairs[inside]
        out = x.clone()  # [rows, len(pos), *shape]; a copy: never edits x in place
        if self.channels is None:
            out[rows, positions - pos.start] = self._cast[pairs, positions]
        else:
            chans = torch.tensor(self.channels, device=x.device)[None, :]  # [1, c]
            out[rows[:, None], (positions - pos.start)[:, None], chans] = (
                self._cast[pairs[:, None], positions[:, None], chans])
        return out

    def __repr__(self) -> str:
        return f"PositionPatch(rows={self.mask.shape[0]}, cells={len(self.rows)}, channels={self.channels})"


def auto_batch_size(model: HookedModel, site: Site, n: int, length: int) -> int:
    """Positions per forward pass: `DEFAULT_BATCH`, fewer if the site's layer's hooked values and the
    logits of that many copies would pass `BATCH_BYTES`; at least 1, at most `length`."""
    names = [h for h in model.hook_dict if hook_layer(h) == site.layer] or [site.name]
    names.append(get_act_name("logits"))  # the patched copies' logits are held too
    per_copy = max(1, model.recording_bytes(n, length, names))
    return max(1, min(length, DEFAULT_BATCH, BATCH_BYTES // per_copy))


def run_logits(model: HookedModel, tokens: Tensor, hooks: Hooks, path: ExecutionPath | None) -> Tensor:
    """logits [batch, pos, vocab] of `tokens` under `hooks`."""
    return model.run_with_hooks(tokens, fwd_hooks=list(hooks), path=path)


def source_values(model: HookedModel, pair: Pair, side: str, names: Sequence[str],
                  path: ExecutionPath | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The `side` run's logits [n, pos, vocab] and its activations at `names`, each [n, pos, *shape]."""
    tokens, hooks = pair.run(side)
    fwd = list(hooks)
    with torch.no_grad(), model.hooks(fwd_hooks=fwd):
        logits, cache = model.run_with_cache(tokens, names_filter=list(names), path=path)
    return logits, {name: cache[name] for name in names}


def baseline_metrics(model: HookedModel, pair: Pair, metric: Metric,
                     path: ExecutionPath | None = None) -> tuple[float, float]:
    """(clean, corrupted) metric, each the mean over the pairs."""
    clean, corrupted, _ = baseline_runs(model, pair, metric, path)
    return clean, corrupted


def baseline_runs(model: HookedModel, pair: Pair, metric: Metric,
                  path: ExecutionPath | None = None) -> tuple[float, float, dict[str, Tensor]]:
    """(clean metric, corrupted metric, each the mean over the pairs; side -> logits [n, pos, vocab])."""
    with torch.no_grad():
        logits = {side: run_logits(model, *pair.run(side), path) for side in ("clean", "corrupted")}
        clean, corrupted = (float(check_metric(metric, logits[side]).mean()) for side in ("clean", "corrupted"))
    return clean, corrupted, logits


def normalize(effect: float, baseline: float, other: float) -> float:
    """effect / (other − baseline): 1 when patching moves the metric all the way to the other run."""
    gap = other - baseline
    return float("nan") if gap == 0 else effect / gap


def patched_logits(
    model: HookedModel, pair: Pair, hook: str, positions: int | Sequence[int] | None = None,
    channels: Sequence[int] | None = None, direction: Direction = "denoising", layer: int | None = None,
    path: ExecutionPath | None = None,
) -> Tensor:
    """The target run's logits [n, pos, vocab] with `hook` patched from the source run at all of
    `positions` at once (default: every position)."""
    pair = check_pair(model, pair)
    source_side, target_side = sides(direction)
    sites = resolve_sites(model, hook, None if layer is None else [layer])
    if len(sites) != 1:
        raise ValueError(f"hook {hook!r} names {len(sites)} sites; give a full name or layer=")
    name = sites[0].name
    n, length = pair.clean.shape
    chosen = check_positions(positions, length)
    chans = check_channels(model, name, channels)
    _, values = source_values(model, pair, source_side, [name], path)
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask[:, chosen] = True
    tokens, hooks = pair.run(target_side)
    with torch.no_grad():
        return run_logits(model, tokens, (*hooks, (name, PositionPatch(values[name], mask, chans))), path)


def top_predictions(model: HookedModel, logits: Tensor, k: int = 5) -> pd.DataFrame:
    """The `k` most probable next tokens of logits [vocab] (e.g. `patched_logits(...)[0, -1]`): a table
    of rank, token (display string), id and prob."""
    if logits.dim() != 1:
        raise ValueError(f"logits must be one position's [vocab], got shape {list(logits.shape)}")
    probs = torch.softmax(logits.detach().float(), dim=-1)  # [vocab]
    values, ids = probs.topk(min(k, probs.shape[-1]))  # [k] each
    tokens = model.to_str_tokens(ids.reshape(1, -1))
    return pd.DataFrame({"rank": range(1, len(tokens) + 1), "token": tokens, "id": ids.tolist(),
                         "prob": values.tolist()})


def activation_patching(
    model: HookedModel,
    pair: Pair,
    metric: Metric,
    hooks: str | Sequence[str] = ("resid_pre", "resid_post"),
    layers: Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    direction: Direction = "denoising",
    batch_size: int | None = None,
    path: ExecutionPath | None = None,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Patch each (hook, layer, position) alone and measure `metric`: a tidy table (`COLUMNS`) with
    effect = metric(patched) − metric(target run), normalized by metric(source) − metric(target).

    Cells run `batch_size` positions per forward pass (rows = positions × pairs; default:
    `auto_batch_size`), resuming at the batch's first position. `df.attrs` holds the clean and
    corrupted metrics and the direction. `executor` (e.g. `workbench.distributed.RayExecutor()`) runs
    the batches as its units, with the same numbers as this process's loop.
    """
    pair = check_pair(model, pair)
    source_side, target_side = sides(direction)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sites = resolve_sites(model, hooks, layers)
    n, length = pair.clean.shape
    chosen = sorted(dict.fromkeys(check_positions(positions, length)))
    chans = {site.name: check_channels(model, site.name, channels) for site in sites}
    clean_metric, corrupted_metric, logits_of = baseline_runs(model, pair, metric, path)
    baseline, other = (corrupted_metric, clean_metric) if direction == "denoising" else (clean_metric, corrupted_metric)
    _, values = source_values(model, pair, source_side, [s.name for s in sites], path)
    tokens, target_hooks = pair.run(target_side)
    sweep = Sweep(model, tokens, tuple(target_hooks), values, logits_of[target_side], chans, metric, path,
                  resumable(target_hooks), baseline, other)
    units = []
    for site in sites:
        size = auto_batch_size(model, site, n, length) if batch_size is None else batch_size
        units.extend((site, tuple(chosen[start:start + size])) for start in range(0, len(chosen), size))
    if executor is None:
        parts = [patch_cells(sweep, unit) for unit in units]
    else:
        parts = executor.map(patch_cells, units, context=sweep, desc="activation patching")
    return table([row for part in parts for row in part], direction, clean_metric, corrupted_metric)


@dataclass(frozen=True)
class Sweep:
    """What every batch of a sweep shares: the model, the target run, the source values, the metric."""

    model: HookedModel
    tokens: Tensor  # [n, pos]
    target_hooks: Hooks
    values: dict[str, Tensor]  # name -> [n, pos, *shape], the source run's
    target_logits: Tensor  # [n, pos, vocab]
    channels: dict[str, list[int] | None]
    metric: Metric
    path: ExecutionPath | None
    can_resume: bool
    baseline: float
    other: float


def patch_cells(sweep: Sweep, unit: tuple[Site, tuple[int, ...]]) -> list[tuple]:
    """One batch of a sweep, (site, positions): each position patched alone in its own copy of the
    target run, one forward pass; the table's rows for those cells (the unit a fan-out runs)."""
    site, cells = unit
    model, tokens = sweep.model, sweep.tokens
    n, length = tokens.shape
    k, first = len(cells), (min(cells) if sweep.can_resume else 0)
    mask = torch.zeros(k, n, length, dtype=torch.bool)  # row c * n + i patches cells[c]
    mask[torch.arange(k), :, torch.tensor(cells)] = True
    rows_mask = mask.reshape(k * n, length)[:, first:]  # [k n, pos - first]
    patch = PositionPatch(sweep.values[site.name][:, first:], rows_mask, sweep.channels[site.name])
    with torch.no_grad():  # [k n, pos - first, v]
        logits, _ = resume(model, tokens, sweep.target_hooks, first, k, [(site.name, patch)], sweep.path)
        logits = torch.cat([tile_rows(sweep.target_logits[:, :first], k * n), logits], dim=1)  # [k n, pos, v]
        measured = check_metric(sweep.metric, logits).reshape(k, n).mean(1)  # [k]
    rows = []
    for position, value in zip(cells, measured.tolist(), strict=True):
        effect = value - sweep.baseline
        normalized = normalize(effect, sweep.baseline, sweep.other)
        rows.append((site.layer, position, site.hook, site.name, effect, normalized))
    return rows


def resume(model: HookedModel, tokens: Tensor, hooks: Hooks, first: int, copies: int,
           patches: Sequence[tuple[str, HookFn]], path: ExecutionPath | None,
           names: Sequence[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """(logits [copies × n, pos − first, vocab], the activations at `names` over the same rows and
    positions) of the run `tokens` under `hooks` and `patches`, `copies` times over, from position
    `first` on: the state after first − 1 (unchanged by a patch at first or later, the run being
    causal) is computed once on n rows and tiled, so positions before `first` are not rerun. Hooks
    are moved along by their `from_position(first)`."""
    def run(ids: Tensor, fwd: list[tuple[str, HookFn]], **kwargs: object) -> tuple[Tensor, dict[str, Tensor]]:
        if not names:
            return model.run_with_hooks(ids, fwd_hooks=fwd, path=path, **kwargs), {}
        with model.hooks(fwd_hooks=fwd):
            logits, cache = model.run_with_cache(ids, names_filter=list(names), path=path, **kwargs)
        return logits, {name: cache[name] for name in names}

    if first == 0:
        return run(tokens.repeat(copies, 1), [*hooks, *patches])
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        _, state = model(tokens[:, :first], return_state=True, path=path)
    state = [{key: tile_rows(value, value.shape[0] * copies) for key, value in layer.items()} for layer in state]
    moved = [(name, fn.from_position(first)) for name, fn in hooks]  # type: ignore[attr-defined]
    return run(tokens[:, first:].repeat(copies, 1), [*moved, *patches], initial_state=state)


def resumable(hooks: Hooks) -> bool:
    """Whether every hook of a run can move along to a later start (`from_position`)."""
    return all(callable(getattr(fn, "from_position", None)) for _, fn in hooks)


def table(rows: list[tuple], direction: str, clean_metric: float, corrupted_metric: float) -> pd.DataFrame:
    """The tidy result, with the run's metrics in `attrs`."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df.attrs.update(direction=direction, clean_metric=clean_metric, corrupted_metric=corrupted_metric)
    return df
