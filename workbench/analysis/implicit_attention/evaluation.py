"""Checks and evaluation of implicit-attention maps: exactness, speed, and perturbation tests.

- `exactness_report`: per layer and mode, |Ã v + bias − output| from the cache, the Jacobian of the
  gates-held-fixed recurrence against Ã, the upper triangle, and the prefix property.
- `benchmark_naive`: a map kernel (S6, Mamba2 or RWKV) against the papers' triple loop (time ratio).
- `perturbation_test`: delete (or mask) the most / least attributed tokens first and measure the
  change of the next-token loss (Ali et al. 2024, section 5.3; Chefer et al. 2021 positive /
  negative perturbation), area under each curve per method.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
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
) -> PerturbationResult:
    """Remove the k most (and least) attributed tokens of a window and measure the loss change.

    tokens: one long text [T]. Each example is a window of `context` tokens ending at a random
    position p, the target the token at p + 1, the attribution computed for the query at the
    window's last position. "delete" removes the chosen tokens and lets earlier text slide in (the
    window keeps its length); "mask" replaces them with `filler`. AUC: the mean loss change over
    `steps`, trapezoid rule on an even grid; more for "most" first is better, less for "least".
    `progress`: a tqdm bar over the attribution methods.
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
    generator = torch.Generator().manual_seed(seed)
    ends = torch.randint(low, high + 1, (n_examples,), generator=generator)  # p
    windows = torch.stack([tokens[p - context + 1: p + 1] for p in ends.tolist()])  # [N, context]
    histories = torch.stack([tokens[p - context - max(steps) + 1: p - context + 1]
                             for p in ends.tolist()]) if max(steps) else windows[:, :0]
    targets = tokens[ends + 1]  # [N]
    device = model.device
    base = _losses(model, windows, targets, batch_size)
    rows = []
    for method in tqdm(methods, desc="perturbation test", unit="method", disable=not progress):
        scores = torch.cat([
            attribute(model, windows[s:s + batch_size].to(device), method, query=-1,
                      target=targets[s:s + batch_size].to(device), seed=seed + s)
            for s in range(0, n_examples, batch_size)
        ])  # [N, context]
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
    curves = pd.DataFrame(rows)
    table = []
    for method in methods:
        auc = {}
        for order in ("most", "least"):
            y = curves[(curves.method == method) & (curves.order == order)].delta_loss.to_numpy()
            auc[order] = float(((y[1:] + y[:-1]) / 2).mean()) if len(y) > 1 else float(y[0])
        table.append({"method": method, "most_auc": auc["most"], "least_auc": auc["least"],
                      "gap": auc["most"] - auc["least"], "description": METHODS[method]})
    table_df = pd.DataFrame(table).sort_values("gap", ascending=False, ignore_index=True)
    return PerturbationResult(curves, table_df, n_examples, context, perturbation, float(base.mean()))
