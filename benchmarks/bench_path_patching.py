"""Path patching and flow knockout on the embedded default model: the batched implementations against
the same analysis written by hand as `run_with_hooks` calls (one per source and path), side by side.

The pair and metric are `bench_patching.py`'s (the first 256 characters of `workbench/utils.py`, 8
characters substituted, logit difference at the last position). Path patching: every source position
before the last, both layers. Flow knockout: every source, each layer alone. Run:

    python benchmarks/bench_path_patching.py            # length 256, 1 thread
    python benchmarks/bench_path_patching.py --quick    # length 64

Measured tables: benchmarks/patching_results.md ("Path patching and flow knockout").
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from bench_patching import DEFAULT_MODEL, timed  # a sibling script: benchmarks/ is on sys.path when run

import workbench
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.patching import Pair, flow_knockout, logit_difference, path_patching, substitute_tokens
from workbench.analysis.patching.flow import AddAt, removed_output
from workbench.analysis.tokens import tokenize
from workbench.utils import get_act_name


def setter(values: torch.Tensor, positions: range | list[int]):
    def hook(x, hook):
        out = x.clone()
        out[:, positions] = values[:, positions]
        return out
    return hook


def paths_by_hand(model, pair: Pair, metric, target: int) -> list[float]:
    """Path patching's effects from plain calls: per source, the total run (cached), then per layer
    the state path (patch its input at s, hold its output over s..t−1)."""
    clean, corrupted = pair.clean[:, :target + 1], pair.corrupted[:, :target + 1]
    layers = range(len(model.blocks))
    enter = [get_act_name("resid_pre", layer) for layer in layers]
    leave = [get_act_name("resid_post", layer) for layer in layers]
    effects = []
    with torch.no_grad():
        _, source = model.run_with_cache(clean, names_filter=enter[0])
        base_logits, held = model.run_with_cache(corrupted, names_filter=leave)
        baseline = float(metric(base_logits).mean())
        for s in range(target):
            with model.hooks(fwd_hooks=[(enter[0], setter(source[enter[0]], [s]))]):
                logits, reached = model.run_with_cache(corrupted, names_filter=enter)
            effects.append(float(metric(logits).mean()) - baseline)
            for layer in layers:
                hooks = [(enter[layer], setter(reached[enter[layer]], [s])),
                         (leave[layer], setter(held[leave[layer]], range(s, target)))]
                effects.append(float(metric(model.run_with_hooks(corrupted, fwd_hooks=hooks)).mean()) - baseline)
    return effects


def flow_by_hand(model, tokens: torch.Tensor, metric) -> list[float]:
    """Flow knockout's effects from plain calls: one full run per (layer, source) with the removed term
    added at the last position."""
    t = tokens.shape[1] - 1
    cache = record(model, tokens, list(range(len(model.blocks))), "exact")
    effects = []
    with torch.no_grad():
        plain = float(metric(model(tokens)).mean())
        for layer in range(len(model.blocks)):
            delta = removed_output(model, layer, cache, t, list(range(t + 1)))  # [1, S, d_model]
            for s in range(t + 1):
                hook = (get_act_name("mixer_out", layer), AddAt(delta[:, s], t))
                effects.append(float(metric(model.run_with_hooks(tokens, fwd_hooks=[hook])).mean()) - plain)
    return effects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    length = 64 if args.quick else args.length
    model = workbench.load(DEFAULT_MODEL)
    source = Path(workbench.__file__).with_name("utils.py").read_text(encoding="utf-8")
    clean = tokenize(model, source[:length], unknown="map").unsqueeze(0)
    replacement = int(tokenize(model, "~", unknown="map")[0])
    spots = torch.linspace(length // 8, length - 2, 8).long().tolist()
    pair = Pair(clean, substitute_tokens(clean, dict.fromkeys(spots, replacement)))
    with torch.no_grad():
        top = int(model(clean)[0, -1].argmax())
        other = model(pair.corrupted)[0, -1]
    other[top] = -float("inf")
    metric = logit_difference(top, int(other.argmax()))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores; {DEFAULT_MODEL}, "
          f"length {length}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with torch.no_grad():
        forward_s, _ = timed(lambda: model(clean), 10)
    t = length - 1
    hand_s, hand = timed(lambda: paths_by_hand(model, pair, metric, t), 1)
    ours_s, df = timed(lambda: path_patching(model, pair, metric), args.repeats)
    ours = df[df.hook != "other"].sort_values(["position", "layer"]).effect.tolist()
    diff = max(abs(a - b) for a, b in zip(ours, hand, strict=True))
    flow_hand_s, flow_hand = timed(lambda: flow_by_hand(model, clean, metric), 1)
    flow_s, flow = timed(lambda: flow_knockout(model, clean, metric), args.repeats)
    flow_diff = max(abs(a - b) for a, b in zip(flow.sort_values(["layer", "position"]).effect, flow_hand,
                                                strict=True))
    print(f"\none plain forward: {forward_s * 1e3:.1f} ms")
    print(f"{'analysis':<16} {'cells':>6} {'by hand (s)':>12} {'ours (s)':>9} {'by hand/ours':>13} "
          f"{'ours/forward':>13} {'max |diff|':>10}")
    for name, cells, h, o, d in (("path patching", len(ours), hand_s, ours_s, diff),
                                 ("flow knockout", len(flow), flow_hand_s, flow_s, flow_diff)):
        print(f"{name:<16} {cells:>6} {h:>12.3f} {o:>9.3f} {h / o:>12.1f}x {o / forward_s:>12.1f}x {d:>10.1e}")
    state = df[df.hook == "state"]
    total = df[df.hook == "total"].effect.abs().sum()
    print("\nshare of Σ|total| per path: " + ", ".join(
        f"layer {layer} state {state[state.layer == layer].effect.abs().sum() / total:.3f}"
        for layer in sorted(set(state.layer))) + f", other {df[df.hook == 'other'].effect.abs().sum() / total:.3f}")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
