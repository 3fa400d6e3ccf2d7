"""Checks and evaluation of implicit-attention maps: exactness, speed, and perturbation tests.

- `exactness_report`: per layer and mode, |Ã v + bias − output| from the cache, the Jacobian of the
  gates-held-fixed recurrence against Ã, the upper triangle, and the prefix property.
- `benchmark_naive`: a map kernel (S6, Mamba2 or RWKV) against the papers' triple loop (time ratio).
- `perturbation_test`: delete (or mask) the most / least attributed tokens first and measure the
  change of the next-token loss (Ali et al. 2024, section 5.3; Chefer et al. 2021 positive /
  negative perturbation), area under each curve per method, at random windows or at given ones.
- `long_range_closers`: windows where locality is not the answer, the query just before a closing
  bracket whose opener lies far back, and `paired_gap_interval` to compare two methods on them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from workbench.analysis.implicit_attention.api import (
    family_of,
    implicit_attention,
    record,
    to_tokens,
)
from workbench.analysis.implicit_attention.attribution import METHODS, attribute
from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.kernel import decay_attention, decay_attention_naive

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "KERNELS",
    "PerturbationResult",
    "benchmark_naive",
    "exactness_report",
    "jacobian",
    "long_range_closers",
    "paired_gap_interval",
    "perturbation_test",
]


def jacobian(form: LinearForm) -> Tensor:
    """∂y/∂v of the gates-held-fixed recurrence by autograd, per channel: [b, d, L, L]."""
    value = form.value.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = form.recur(value)  # [b, d, L]
        rows = [torch.autograd.grad(y[..., t].sum(), value, retain_graph=True)[0]
                for t in range(y.shape[-1])]
    return torch.stack(rows, dim=-2)


def exactness_report(model: HookedModel, tokens: Tensor | str, layers: Sequence[int] | None = None,
                     modes: Sequence[str] | None = None, jacobian_positions: int = 24,
                     prefix: int | None = None) -> Any:
    """One row per (layer, mode): reconstruction, Jacobian, upper-triangle and prefix errors."""
    import pandas as pd

    family = family_of(model)
    tokens = to_tokens(model, tokens)
    L = tokens.shape[1]
    layers = list(range(len(model.blocks))) if layers is None else list(layers)
    modes = list(family.modes if modes is None else modes)
    prefix = prefix or max(1, L // 2)
    rows = []
    for mode in modes:
        cache = record(model, tokens, layers, mode)
        short = tokens[:, :jacobian_positions]
        short_cache = record(model, short, layers, mode)
        head = record(model, tokens[:, :prefix], layers, mode)
        for layer in layers:
            att = implicit_attention(model, tokens, layer, mode=mode, cache=cache)
            small = family.form(model, short_cache, layer, mode)
            jac = jacobian(small)
            att_short = implicit_attention(model, short, layer, mode=mode, cache=short_cache)
            att_head = implicit_attention(model, tokens[:, :prefix], layer, mode=mode, cache=head)
            rows.append({
                "layer": layer, "mode": mode, "dtype": str(att.maps.dtype).replace("torch.", ""),
                "positions": L, "channels": att.maps.shape[1],
                "max_error": att.max_error(), "relative_error": att.relative_error(),
                "jacobian_error": float((jac - att_short.maps).abs().max()),
                "upper_triangle_max": float(att.maps.triu(1).abs().max()),
                "prefix_error": float((att_head.maps - att.maps[..., :prefix, :prefix]).abs().max()),
                "output": att.output_name,
            })
    return pd.DataFrame(rows)


KERNELS = {
    "decay": "S6 / Mamba: a decay per state entry, chunked segment sums (`decay_attention`)",
    "scalar": "Mamba2: one decay per head, the SSD matrix (C Bᵀ) ⊙ exp(segsum), chunked (`scalar_decay_attention`)",
    "wkv": "RWKV-4: the WKV ratio in log space, chunked, max-shifted per chunk (`rwkv.wkv_attention`)",
}


def _benchmark_operands(kernel: str, L: int, channels: int, n: int, generator: torch.Generator,
                        dtype: torch.dtype) -> tuple[Any, Any, tuple[Tensor, ...]]:
    """(fast function, naive loop, random operands of the family's shapes) for one length."""
    from workbench.analysis.implicit_attention.kernel import scalar_decay_attention
    from workbench.analysis.implicit_attention.rwkv import wkv_attention, wkv_attention_naive

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=dtype)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    if kernel == "decay":
        return decay_attention, decay_attention_naive, (-rand(1, channels, L, n) * 0.1, randn(1, 1, L, n),
                                                        randn(1, channels, L, n))
    if kernel == "scalar":
        log_decay, C, B = -rand(1, channels, L, 1) * 0.1, randn(1, channels, L, n), randn(1, channels, L, n)
        return (lambda ld, c, b: scalar_decay_attention(ld[..., 0], c, b)), decay_attention_naive, (log_decay, C, B)
    if kernel == "wkv":
        k, w, u, r = randn(1, channels, L), rand(1, channels, L), randn(1, channels, L), rand(1, channels, L)
        log_den = k.cummax(-1).values + 1.0  # any finite denominators: the kernels' work is the same
        return wkv_attention, wkv_attention_naive, (k, w, u, log_den, r)
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def benchmark_naive(lengths: Sequence[int] = (128, 256, 512), channels: int = 16, n: int = 16,
                    naive_max_length: int = 256, repeats: int = 3, seed: int = 0,
                    dtype: torch.dtype = torch.float32, kernel: str = "decay") -> Any:
    """Seconds of a fast map kernel vs the papers' triple loop on random operands; the ratio.

    kernel: "decay" (S6), "scalar" (Mamba2) or "wkv" (RWKV-4), see `KERNELS`. The naive loop is
    timed up to `naive_max_length`; beyond, it is extrapolated (column `naive_extrapolated`) as
    L^p from the longest measured length, p fitted on the two longest measured lengths and
    clamped to [2, 3] (the loop runs L²/2 iterations of up-to-L products), or p = 2, a lower
    bound, when only one length was measured.
    """
    import pandas as pd

    generator = torch.Generator().manual_seed(seed)
    _, naive_fn, args = _benchmark_operands(kernel, 4, channels, n, torch.Generator().manual_seed(seed), dtype)
    naive_fn(*args)  # warm-up: the first call of the loop pays for dispatch
    rows = []
    measured: list[tuple[int, float]] = []
    for L in lengths:
        fast_fn, naive_fn, args = _benchmark_operands(kernel, L, channels, n, generator, dtype)
        fast_fn(*args)  # warm-up: first calls pay for allocation and dispatch
        fast = min(_time(fast_fn, *args) for _ in range(repeats))
        if L <= naive_max_length:
            naive = _time(naive_fn, *args)
            measured.append((L, naive))
            extrapolated = False
        elif measured:
            (L1, t1), (L0, t0) = measured[-1], measured[-2] if len(measured) > 1 else (None, None)
            power = 2.0 if L0 is None else min(3.0, max(2.0, np.log(t1 / t0) / np.log(L1 / L0)))
            naive, extrapolated = t1 * (L / L1) ** power, True
        else:
            naive, extrapolated = float("nan"), True
        rows.append({"kernel": kernel, "length": L, "channels": channels, "d_state": n if kernel != "wkv" else 1,
                     "fast_s": fast, "naive_s": naive, "naive_extrapolated": extrapolated, "ratio": naive / fast})
    return pd.DataFrame(rows)


def _time(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@dataclass
class PerturbationResult:
    """Mean loss change per method, order and number of removed tokens; AUC per method."""

    curves: Any  # DataFrame: method, order ("most" / "least" first), removed, delta_loss, sem
    table: Any  # DataFrame: method, most_auc (higher is better), least_auc (lower), gap
    n_examples: int
    context: int
    perturbation: str
    base_loss: float  # mean next-token loss of the unperturbed windows (nats)
    example_gaps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> [N] per-window gap
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [N] query positions
    # with `relevant` given: method -> [N] rank of the known-relevant token (0 = ranked first)
    relevant_ranks: dict[str, np.ndarray] = field(default_factory=dict)
    relevant_delta: np.ndarray | None = None  # [N] loss change from deleting the relevant token alone


def _perturbed(history: Tensor, window: Tensor, removed: Tensor, how: str, filler: int) -> Tensor:
    """One window with `removed` positions deleted (earlier text slides in) or masked."""
    if how == "mask":
        out = window.clone()
        out[removed] = filler
        return out
    keep = torch.ones(window.shape[0], dtype=torch.bool)
    keep[removed] = False
    k = int((~keep).sum())
    earlier = history[history.shape[0] - k:] if k else history[:0]
    return torch.cat([earlier, window[keep]])


def _losses(model: HookedModel, inputs: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """Next-token loss (nats) at the last position of each row of inputs [N, L]: [N]."""
    out = []
    device = model.device
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start:start + batch_size].to(device)
            logits = model(x)[:, -1].float()  # [b, d_vocab]
            y = targets[start:start + batch_size].to(device)
            out.append(torch.nn.functional.cross_entropy(logits, y, reduction="none").cpu())
    return torch.cat(out)


def perturbation_test(
    model: HookedModel,
    tokens: Tensor,
    *,
    methods: Sequence[str] | None = None,
    n_examples: int = 32,
    context: int = 64,
    steps: Sequence[int] = (0, 1, 2, 4, 8, 16),
    perturbation: str = "delete",
    filler: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    ends: Sequence[int] | None = None,
    relevant: Sequence[int] | None = None,
) -> PerturbationResult:
    """Remove the k most (and least) attributed tokens of a window and measure the loss change.

    tokens: one long text [T]. Each example is a window of `context` tokens ending at a random
    position p, the target the token at p + 1, the attribution computed for the query at the
    window's last position. "delete" removes the chosen tokens and lets earlier text slide in (the
    window keeps its length); "mask" replaces them with `filler`. AUC: the mean loss change over
    `steps`, trapezoid rule on an even grid; more for "most" first is better, less for "least".
    `ends`: the query positions p to use instead of `n_examples` random ones (e.g. from
    `long_range_closers`). `relevant`: with `ends`, one text position per window of a token known
    to matter (the opener of the closing bracket): each method's rank of it, and the loss change
    from deleting it alone, are returned too. `progress`: a tqdm bar over the attribution methods.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if perturbation not in ("delete", "mask"):
        raise ValueError(f"perturbation must be 'delete' or 'mask', got {perturbation!r}")
    family = family_of(model)
    if methods is None:
        methods = [m for m in METHODS if not m.endswith("_paper") or "paper" in family.modes]
    tokens = torch.as_tensor(tokens).reshape(-1).cpu()
    steps = sorted(set(int(k) for k in steps) | {0})
    if max(steps) > context:
        raise ValueError(f"cannot remove {max(steps)} tokens from a window of {context}")
    low, high = context + max(steps) - 1, tokens.shape[0] - 2
    if high < low:
        raise ValueError(f"the text has {tokens.shape[0]} tokens; it needs at least "
                         f"{low + 2} for windows of {context} with {max(steps)} removed")
    if ends is None:
        generator = torch.Generator().manual_seed(seed)
        ends_t = torch.randint(low, high + 1, (n_examples,), generator=generator)  # p
    else:
        ends_t = torch.as_tensor(list(ends), dtype=torch.long).reshape(-1)  # [N]
        outside = ends_t[(ends_t < low) | (ends_t > high)]
        if len(ends_t) == 0 or len(outside):
            raise ValueError(f"ends must be a non-empty list of positions in [{low}, {high}] (windows of "
                             f"{context} with {max(steps)} removed, in a text of {tokens.shape[0]} "
                             f"tokens); got {len(ends_t)} with {outside.tolist()[:5]} outside")
        n_examples = len(ends_t)
    ends = ends_t
    marked = None
    if relevant is not None:
        if len(relevant) != n_examples:
            raise ValueError(f"relevant needs one position per window ({n_examples}), got {len(relevant)}")
        marked = torch.as_tensor(list(relevant), dtype=torch.long) - (ends - context + 1)  # [N] in-window
        if ((marked < 0) | (marked >= context)).any():
            raise ValueError(f"each relevant position must lie in its window of the {context} tokens "
                             "ending at its query position")
    windows = torch.stack([tokens[p - context + 1: p + 1] for p in ends.tolist()])  # [N, context]
    histories = torch.stack([tokens[p - context - max(steps) + 1: p - context + 1]
                             for p in ends.tolist()]) if max(steps) else windows[:, :0]
    targets = tokens[ends + 1]  # [N]
    device = model.device
    base = _losses(model, windows, targets, batch_size)
    relevant_ranks: dict[str, np.ndarray] = {}
    relevant_delta = None
    if marked is not None:
        alone = torch.stack([_perturbed(histories[e], windows[e], marked[e:e + 1], perturbation, filler)
                             for e in range(n_examples)])
        relevant_delta = (_losses(model, alone, targets, batch_size) - base).numpy()
    rows = []
    example_gaps: dict[str, np.ndarray] = {}
    for method in tqdm(methods, desc="perturbation test", unit="method", disable=not progress):
        per_window: dict[str, np.ndarray] = {}
        scores = torch.cat([
            attribute(model, windows[s:s + batch_size].to(device), method, query=-1,
                      target=targets[s:s + batch_size].to(device), seed=seed + s)
            for s in range(0, n_examples, batch_size)
        ])  # [N, context]
        if marked is not None:
            # ties ranked pessimistically: positions scoring at least as high, the token itself excluded
            ranks = (scores >= scores.gather(1, marked[:, None])).sum(1) - 1  # [N]
            relevant_ranks[method] = ranks.numpy()
        for order in ("most", "least"):
            ranking = torch.argsort(scores, dim=1, descending=order == "most", stable=True)
            inputs = [
                _perturbed(histories[e], windows[e], ranking[e, :k], perturbation, filler)
                for k in steps for e in range(n_examples)
            ]
            losses = _losses(model, torch.stack(inputs), targets.repeat(len(steps)), batch_size)
            delta = (losses.reshape(len(steps), n_examples) - base[None]).numpy()
            for k, d in zip(steps, delta, strict=True):
                rows.append({"method": method, "order": order, "removed": k,
                             "delta_loss": float(d.mean()),
                             "sem": float(d.std(ddof=1) / np.sqrt(n_examples)) if n_examples > 1 else 0.0})
            per_window[order] = _auc(delta)
        example_gaps[method] = per_window["most"] - per_window["least"]
    curves = pd.DataFrame(rows)
    table = []
    for method in methods:
        auc = {}
        for order in ("most", "least"):
            y = curves[(curves.method == method) & (curves.order == order)].delta_loss.to_numpy()
            auc[order] = float(_auc(y[:, None])[0])
        table.append({"method": method, "most_auc": auc["most"], "least_auc": auc["least"],
                      "gap": auc["most"] - auc["least"], "description": METHODS[method]})
    table_df = pd.DataFrame(table).sort_values("gap", ascending=False, ignore_index=True)
    return PerturbationResult(curves, table_df, n_examples, context, perturbation, float(base.mean()),
                              example_gaps, ends.numpy(), relevant_ranks, relevant_delta)


def _auc(delta: np.ndarray) -> np.ndarray:
    """Area under loss-change curves [steps, N] on an even grid (trapezoid rule, mean): [N]."""
    if len(delta) == 1:
        return delta[0].astype(float)
    return ((delta[1:] + delta[:-1]) / 2).mean(0).astype(float)


def paired_gap_interval(result: PerturbationResult, method: str, baseline: str, n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean over windows of gap(method) − gap(baseline) and its percentile bootstrap interval
    (windows resampled, both methods on the same windows): (difference, low, high)."""
    for name in (method, baseline):
        if name not in result.example_gaps:
            raise KeyError(f"method {name!r} was not in this perturbation test; it ran "
                           f"{', '.join(result.example_gaps)}")
    diff = result.example_gaps[method] - result.example_gaps[baseline]  # [N]
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))


_CLOSERS = {")": "(", "]": "[", "}": "{"}


def long_range_closers(text: str, min_distance: int, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions where locality is not the answer: the character before a closing bracket whose
    matching opener lies `min_distance`..`max_distance` characters back (a stack matcher that
    forgets everything at a mismatch). Returns (query positions p [N], opener positions [N]); the
    closer is at p + 1. For a character-level tokenizer these index the tokens too."""
    if not 1 <= min_distance <= max_distance:
        raise ValueError(f"need 1 <= min_distance <= max_distance, got {min_distance} and {max_distance}")
    stack: list[tuple[str, int]] = []
    queries, openers = [], []
    for i, ch in enumerate(text):
        if ch in "([{":
            stack.append((ch, i))
        elif ch in _CLOSERS:
            if stack and stack[-1][0] == _CLOSERS[ch]:
                _, j = stack.pop()
                if min_distance <= i - j <= max_distance:
                    queries.append(i - 1)
                    openers.append(j)
            else:
                stack.clear()
    return np.array(queries, dtype=np.int64), np.array(openers, dtype=np.int64)
