"""The gated delta rule's implicit-attention map: chunked (UT transform) against the per-pair loop.

Times `delta_rule_attention` (best of 3 after a warm-up) and `delta_rule_attention_naive` (once) on
random operands (batch 1, --heads heads, unit keys, β in (0, 1), α in (e^−1, 1), one α per step
(Gated DeltaNet) or per key channel (Kimi's KDA)) and prints ratio = naive / chunked per length and
decay kind, plus the largest difference between the two maps. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_delta_rule_attention.py --lengths 128 256 512 1024 --decays step channel
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from workbench.analysis.implicit_attention.delta_rule import delta_rule_attention, delta_rule_attention_naive


def operands(L: int, heads: int, d_k: int, dtype: torch.dtype, decay: str = "step") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(L)
    q = torch.randn(1, heads, L, d_k, generator=g, dtype=dtype) * d_k ** -0.5
    k = torch.nn.functional.normalize(torch.randn(1, heads, L, d_k, generator=g, dtype=dtype), dim=-1)
    beta = torch.rand(1, heads, L, generator=g, dtype=dtype)
    log_alpha = -torch.rand(1, heads, L, *((d_k,) if decay == "channel" else ()), generator=g, dtype=dtype)
    return q, k, beta, log_alpha


def best_time(fn, *args, repeats: int = 3) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--d-k", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--decays", nargs="+", choices=["step", "channel"], default=["step"],
                        help="one α per head and step, or one per key channel (KDA)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.dtype}, batch 1, "
          f"{args.heads} heads, d_k {args.d_k}; load average {os.getloadavg()}")
    print("| L | decay | chunked (s) | naive (s) | ratio | max |chunked − naive| |")
    print("|---|---|---|---|---|---|")
    for L in args.lengths:
        for decay in args.decays:
            ops = operands(L, args.heads, args.d_k, dtype, decay)
            fast = best_time(delta_rule_attention, *ops)
            start = time.perf_counter()
            naive_maps, _ = delta_rule_attention_naive(*ops)
            naive = time.perf_counter() - start
            difference = float((delta_rule_attention(*ops)[0] - naive_maps).abs().max())
            print(f"| {L} | {decay} | {fast:.4f} | {naive:.2f} | {naive / fast:.0f}x | {difference:.1e} |",
                  flush=True)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
