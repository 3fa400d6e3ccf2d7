"""Implicit-attention map kernels against the papers' naive triple loop, per family, L = 128..2048.

One table per kernel (S6 decay per state entry, Mamba2 scalar decay per head, RWKV-4 log-space
WKV): the fast kernel's best time, the naive loop's time (measured up to --naive-max, beyond that
extrapolated and marked, see `benchmark_naive`), and the ratio naive / fast. Run:

    python benchmarks/bench_implicit_attention.py                  # L = 128..2048, naive to 512
    python benchmarks/bench_implicit_attention.py --naive-max 1024 # measure the loop further (minutes)
    python benchmarks/bench_implicit_attention.py --quick          # L = 32..128, seconds

Measured tables, with their command lines and load averages: benchmarks/implicit_attention_results.md.
"""

from __future__ import annotations

import argparse
import os

import torch

from workbench.analysis.implicit_attention.evaluation import KERNELS, benchmark_naive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--naive-max", type=int, default=512, help="longest length the naive loop is timed at")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1 on shared machines)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [32, 64, 128] if args.quick else args.lengths
    naive_max = 64 if args.quick else args.naive_max
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores; "
          f"{args.channels} channels, d_state {args.d_state}, float32")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for kernel in args.kernels:
        table = benchmark_naive(lengths, channels=args.channels, n=args.d_state, naive_max_length=naive_max,
                                repeats=3, kernel=kernel)
        print(f"\n{kernel}: {KERNELS[kernel]}")
        print(f"{'L':>6} {'fast (s)':>10} {'naive (s)':>11} {'ratio':>10}")
        for row in table.itertuples():
            mark = " (naive extrapolated)" if row.naive_extrapolated else ""
            print(f"{row.length:>6} {row.fast_s:>10.4f} {row.naive_s:>11.2f} {row.ratio:>9.0f}x{mark}")
    print("\nload average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
