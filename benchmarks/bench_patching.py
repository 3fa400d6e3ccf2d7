"""Activation patching: the batched sweep against one `run_with_hooks` call per cell, and attribution
patching against both, on the embedded default model, side by side.

A layer × position sweep of each hook over one clean/corrupted pair of Python source text (the
corrupted side substitutes characters at a few positions); the metric is the logit difference at
the last position between the clean and corrupted runs' top predictions. Printed: each method's time
and the ratios, the largest difference between the batched and per-cell effects, and attribution's
Spearman rank correlation with the real effects (ranks by torch, ties averaged). Run:

    python benchmarks/bench_patching.py                      # length 256, 1 thread, resid_post and c
    python benchmarks/bench_patching.py --quick              # length 64, seconds

Measured tables, with their command lines and load averages: benchmarks/patching_results.md.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

import workbench
from workbench.analysis.patching import (
    Pair,
    activation_patching,
    attribution_patching,
    logit_difference,
    resolve_sites,
    substitute_tokens,
)
from workbench.analysis.tokens import tokenize

DEFAULT_MODEL = "lstm-stdlib-2x128"  # the embedded default of README.md and the tour notebook


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (ties averaged), as `steering.evaluation` computes it: pandas'."""
    return float(pd.Series(a.double().numpy()).corr(pd.Series(b.double().numpy()), method="spearman"))


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(best wall time of `repeats` runs, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def per_cell(model, pair: Pair, metric, hooks: list[str]) -> list[float]:
    """The naive sweep: one `run_with_hooks` call per (hook, layer, position) cell."""
    names = [s.name for s in resolve_sites(model, hooks)]
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.clean, names_filter=names)
        baseline = float(metric(model(pair.corrupted)).mean())
    effects = []
    for name in names:
        for position in range(pair.clean.shape[1]):
            def patch(x, hook, position=position, name=name):
                out = x.clone()
                out[:, position] = cache[name][:, position]
                return out

            with torch.no_grad():
                logits = model.run_with_hooks(pair.corrupted, fwd_hooks=[(name, patch)])
            effects.append(float(metric(logits).mean()) - baseline)
    return effects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--hooks", nargs="+", default=["resid_post", "c"])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="patched positions per forward pass (default: the sweep's own choice)")
    parser.add_argument("--corrupt", type=int, default=8, help="characters substituted, evenly spaced")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1 on shared machines)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fast methods (best kept)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    length = 64 if args.quick else args.length
    model = workbench.load(args.model)
    source = Path(workbench.__file__).with_name("utils.py").read_text(encoding="utf-8")
    clean = tokenize(model, source[: length], unknown="map").unsqueeze(0)  # [1, pos]
    replacement = int(tokenize(model, "~", unknown="map")[0])
    spots = torch.linspace(length // 8, length - 2, args.corrupt).long().tolist()
    corrupted = substitute_tokens(clean, dict.fromkeys(spots, replacement))
    pair = Pair(clean, corrupted)
    with torch.no_grad():
        top_clean = int(model(clean)[0, -1].argmax())
        corrupted_logits = model(corrupted)[0, -1]
    corrupted_logits[top_clean] = -float("inf")
    metric = logit_difference(top_clean, int(corrupted_logits.argmax()))

    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores; model {args.model} "
          f"({model.cfg.family}, {len(model.blocks)} layers, path {model.path}), length {length}, "
          f"hooks {' '.join(args.hooks)}, batch {args.batch_size or 'auto'}, {args.corrupt} characters corrupted")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    times: dict[str, tuple[float, float, float]] = {}  # hook -> (per-cell, batched, AtP) seconds
    naive: list[float] = []
    tables, estimates = [], []
    for hook in args.hooks:
        naive_s, effects = timed(lambda hook=hook: per_cell(model, pair, metric, [hook]), 1)
        batched_s, table = timed(lambda hook=hook: activation_patching(
            model, pair, metric, hooks=hook, batch_size=args.batch_size), args.repeats)
        atp_s, estimate = timed(lambda hook=hook: attribution_patching(model, pair, metric, hooks=hook), args.repeats)
        times[hook] = (naive_s, batched_s, atp_s)
        naive += effects
        tables.append(table)
        estimates.append(estimate)
    all_atp_s, _ = timed(lambda: attribution_patching(model, pair, metric, hooks=args.hooks), args.repeats)
    table, estimate = pd.concat(tables, ignore_index=True), pd.concat(estimates, ignore_index=True)
    real = torch.tensor(table.effect.to_numpy())
    print(f"\nclean metric {tables[0].attrs['clean_metric']:.3f}, corrupted {tables[0].attrs['corrupted_metric']:.3f}; "
          f"{len(table)} cells (layers x positions per hook)")
    print(f"{'hook':<12} {'cells':>6} {'per-cell (s)':>13} {'batched (s)':>12} {'AtP (s)':>9} "
          f"{'per-cell/batched':>17} {'batched/AtP':>12} {'per-cell/AtP':>13}")
    total = [sum(t[i] for t in times.values()) for i in range(3)]
    for hook, (naive_s, batched_s, atp_s) in [*times.items(), ("all (AtP once)", (total[0], total[1], all_atp_s))]:
        cells = len(table) if hook.startswith("all") else int((table.hook == hook).sum())
        print(f"{hook:<12} {cells:>6} {naive_s:>13.3f} {batched_s:>12.3f} {atp_s:>9.3f} "
              f"{naive_s / batched_s:>16.1f}x {batched_s / atp_s:>11.1f}x {naive_s / atp_s:>12.1f}x")
    print(f"\nlargest |batched − per-cell| effect: {float((real - torch.tensor(naive)).abs().max()):.2e}")
    atp = torch.tensor(estimate.effect.to_numpy())
    # cells whose real effect is above float32 noise: the rest (before the first corrupted position, or
    # off the read-out position in the last layer) are ties at zero for AtP and rounding noise for patching
    visible = real.abs() > 1e-3 * float(real.abs().max())
    print(f"{'Spearman(AtP, patching)':<28} {'all cells':>10} {'|effect| > 1e-3 max':>20}")
    for hook in [*args.hooks, None]:
        every = torch.ones(len(real), dtype=torch.bool)
        rows = every if hook is None else torch.tensor((table.hook == hook).to_numpy())
        both = rows & visible
        print(f"{hook or 'every hook':<28} {spearman(real[rows], atp[rows]):>10.3f} "
              f"{spearman(real[both], atp[both]):>13.3f} ({int(both.sum())} cells)")
    print("load average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
