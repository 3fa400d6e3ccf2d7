"""Cost of one edit, measured side by side in one run (issue 18, "Edits in linear time").

On the default embedded model (lstm-stdlib-2x128), 1 thread, fused path, batch 1, an edit setting
`blocks.0.mixer.hook_c` at position 10, prints per length:
  declarative/plain    : `run_with_edits(tokens, edits=[Edit(...)])` / the plain forward
  position-wise/plain  : the same edit as a `position_wise` Python hook / the plain forward
  general replay/plain : the same edit as an unmarked Python hook (step-by-step replay, O(L²)) /
                         the plain forward; skipped where it would take over --replay-limit seconds
Run: python benchmarks/bench_edits.py [--lengths 1024 8192 32768 --repeats 3 --replay-limit 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_paths import best_time  # a sibling script: benchmarks/ is on sys.path when run

import workbench
from workbench.models import Edit, position_wise

MODEL = "lstm-stdlib-2x128"
HOOK = "blocks.0.mixer.hook_c"
POSITION = 10


def set_at_position(x: torch.Tensor, hook: object) -> torch.Tensor:
    """The edit as an unmarked hook on the whole [batch, pos, d_hidden] tensor."""
    x = x.clone()
    x[:, POSITION] = 0.0
    return x


def set_where_present(x: torch.Tensor, hook: object, pos: range) -> torch.Tensor:
    """The edit as a position-wise hook on positions `pos` of [batch, len(pos), d_hidden]."""
    if POSITION in pos:
        x = x.clone()
        x[:, POSITION - pos.start] = 0.0
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replay-limit", type=float, default=20.0, help="seconds; skip the replay beyond")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = workbench.load(MODEL, path="fused")
    edit = Edit(HOOK, POSITION, "zero")
    marked = position_wise(set_where_present)
    print(f"{MODEL}, fused path, 1 thread, batch 1, edit of {HOOK} at position {POSITION}")
    print(f"{'length':>7} {'plain s':>8} {'decl/plain':>11} {'pos-wise/plain':>15} {'replay/plain':>13}")
    replay_estimate: float | None = None  # seconds per length², from the last measured replay
    with torch.no_grad():
        for length in args.lengths:
            tokens = torch.randint(0, model.cfg.d_vocab, (1, length), generator=torch.Generator().manual_seed(0))
            plain = best_time(lambda tokens=tokens: model(tokens), args.repeats)
            declarative = best_time(lambda tokens=tokens: model.run_with_edits(tokens, edits=[edit]), args.repeats)
            local = best_time(lambda tokens=tokens: model.run_with_hooks(tokens, fwd_hooks=[(HOOK, marked)]),
                              args.repeats)
            expected = None if replay_estimate is None else replay_estimate * length**2
            if expected is not None and expected > args.replay_limit:
                replay_text = f"skipped (~{expected:.0f} s)"
            else:
                start = time.perf_counter()
                model.run_with_hooks(tokens, fwd_hooks=[(HOOK, set_at_position)])
                replay = time.perf_counter() - start
                replay_estimate = replay / length**2
                replay_text = f"{replay / plain:.1f}x"
            print(f"{length:>7} {plain:>8.3f} {declarative / plain:>10.2f}x {local / plain:>14.2f}x {replay_text:>13}",
                  flush=True)


if __name__ == "__main__":
    main()
