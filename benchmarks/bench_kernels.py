"""Every fast path in workbench.kernels against its step-by-step reference, in one run.

Prints one table row per kernel: the best time of the reference and of the fast path over
interleaved repeats (so both see the same machine load), the ratio reference / fast (the speedup),
and the largest difference between their outputs (absolute, and relative to the largest
magnitude of the reference output). Run:

    python benchmarks/bench_kernels.py                # the shapes of the design
    python benchmarks/bench_kernels.py --quick        # small shapes, a few seconds
    python benchmarks/bench_kernels.py --threads 1    # pin intra-op threads (shared machines)

On a machine whose other jobs keep its cores busy (load average above the core count), every
multi-threaded op waits for a descheduled thread, which swamps both columns: use --threads 1.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.kernels import (
    available_kernels,
    elman_pre_from_hidden,
    gru_gates_from_hidden,
    linear_scan,
    linear_scan_reference,
    log_space_scan,
    log_space_scan_heinsen,
    log_space_scan_reference,
    lstm_gates_from_hidden,
    selective_scan,
    selective_scan_reference,
)


@dataclass
class Row:
    kernel: str
    shape: str
    reference_ms: float
    fast_ms: float
    max_abs_err: float
    max_rel_err: float

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.fast_ms


def _outputs(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return list(x.values())
    return [t for item in x for t in _outputs(item)]


def compare(
    kernel: str,
    shape: str,
    reference: Callable[[], object],
    fast: Callable[[], object],
    repeats: int,
) -> Row:
    """Time reference and fast interleaved (one warm-up each), keep the best of each (other load
    on a shared machine only adds time), compare outputs."""
    with torch.no_grad():
        ref_out, fast_out = _outputs(reference()), _outputs(fast())
        abs_err = max((f - r).abs().max().item() for f, r in zip(fast_out, ref_out, strict=True))
        rel_err = max(  # relative to the largest magnitude of each output
            ((f - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
            for f, r in zip(fast_out, ref_out, strict=True)
        )
        del ref_out, fast_out
        times: dict[str, list[float]] = {"ref": [], "fast": []}
        for _ in range(repeats):
            for name, fn in (("ref", reference), ("fast", fast)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return Row(
        kernel,
        shape,
        1e3 * min(times["ref"]),
        1e3 * min(times["fast"]),
        abs_err,
        rel_err,
    )


def bench_linear_scan(batch: int, pos: int, state: int, repeats: int) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(batch, pos, state, generator=gen)
    b = torch.randn(batch, pos, state, generator=gen)
    h0 = torch.randn(batch, state, generator=gen)
    return [
        compare(
            "linear_scan",
            f"[{batch},{pos},{state}] f32",
            lambda: linear_scan_reference(a, b, h0),
            lambda: linear_scan(a, b, h0),
            repeats,
        )
    ]


def bench_log_space_scan(batch: int, pos: int, state: int, repeats: int) -> list[Row]:
    gen = torch.Generator().manual_seed(1)
    k = 2 * torch.randn(batch, pos, state, generator=gen)
    x = 2 * torch.randn(batch, pos, state, generator=gen)
    log_a = -F.softplus(k)  # minGRU: log(1 - z)
    log_b = -F.softplus(-k) + torch.where(x >= 0, torch.log(x.clamp_min(0) + 0.5), -F.softplus(-x))
    shape = f"[{batch},{pos},{state}] f32"

    def reference():
        return log_space_scan_reference(log_a, log_b)

    return [
        compare("log_space_scan", shape, reference, lambda: log_space_scan(log_a, log_b), repeats),
        compare(
            "log_space_scan_heinsen", shape, reference, lambda: log_space_scan_heinsen(log_a, log_b), repeats
        ),
    ]


def bench_selective_scan(batch: int, pos: int, d: int, n: int, repeats: int, states: bool) -> list[Row]:
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(batch, pos, d, generator=gen)
    delta = F.softplus(torch.randn(batch, pos, d, generator=gen) - 1)
    A = -torch.exp(torch.randn(d, n, generator=gen))
    B = torch.randn(batch, pos, n, generator=gen)
    C = torch.randn(batch, pos, n, generator=gen)
    D = torch.randn(d, generator=gen)
    args = (u, delta, A, B, C, D, None, states)
    return [
        compare(
            f"selective_scan states={states}",
            f"b{batch} p{pos} d{d} n{n} f32",
            lambda: selective_scan_reference(*args),
            lambda: selective_scan(*args),
            repeats,
        )
    ]


def _step_by_step(cell: str, x, h, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Recompute every gate from the fused h one position at a time (the reference)."""
    h_prev, c, out = h0, c0, []
    for t in range(x.shape[1]):
        gates = F.linear(x[:, t], w_ih, b_ih) + F.linear(h_prev, w_hh, b_hh)
        if cell == "lstm":
            i, f, g, o = gates.chunk(4, dim=-1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            out.append((i, f, g, o, c))
        elif cell == "gru":
            i_r, i_z, i_n = F.linear(x[:, t], w_ih, b_ih).chunk(3, dim=-1)
            h_r, h_z, h_n = F.linear(h_prev, w_hh, b_hh).chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            out.append((r, torch.sigmoid(i_z + h_z), torch.tanh(i_n + r * h_n)))
        else:
            out.append((gates,))
        h_prev = h[:, t]
    return [torch.stack(q, dim=1) for q in zip(*out, strict=True)]


def bench_gates(batch: int, pos: int, d_in: int, hidden: int, repeats: int) -> list[Row]:
    torch.manual_seed(3)
    rows = []
    shape = f"b{batch} p{pos} in{d_in} H{hidden} f32"
    x = torch.randn(batch, pos, d_in)
    h0, c0 = torch.randn(batch, hidden), torch.randn(batch, hidden)
    for cell, cls in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU), ("elman", torch.nn.RNN)):
        rnn = cls(d_in, hidden, batch_first=True)
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        with torch.no_grad():
            h, _ = rnn(x, (h0[None], c0[None]) if cell == "lstm" else h0[None])
        if cell == "lstm":

            def fast(h=h, weights=weights):
                return lstm_gates_from_hidden(x, h, h0, c0, *weights)
        elif cell == "gru":

            def fast(h=h, weights=weights):
                return gru_gates_from_hidden(x, h, h0, *weights)
        else:

            def fast(h=h, weights=weights):
                return elman_pre_from_hidden(x, h, h0, *weights)

        def reference(cell=cell, h=h, weights=weights):
            return _step_by_step(cell, x, h, h0, c0, *weights)

        rows.append(compare(f"{cell} gates from h", shape, reference, fast, repeats))
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'kernel':<30} {'shape':<28} {'ref ms':>9} {'fast ms':>9} {'speedup':>8}"
    header += f" {'max abs':>9} {'abs/max':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.kernel:<30} {r.shape:<28} {r.reference_ms:>9.1f} {r.fast_ms:>9.1f} "
            f"{r.speedup:>7.2f}x {r.max_abs_err:>9.1e} {r.max_rel_err:>9.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--s6-batch", type=int, default=16, help="selective_scan batch, states=False")
    parser.add_argument("--s6-states-batch", type=int, default=16, help="selective_scan batch, states=True")
    parser.add_argument("--s6-repeats", type=int, default=1, help="timed runs of selective_scan")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}, backends {available_kernels()}"
    )
    print("speedup = reference ms / fast ms (best of interleaved runs); errors fast vs reference\n")
    r = args.repeats
    if args.quick:
        rows = bench_linear_scan(4, 256, 64, r) + bench_log_space_scan(4, 256, 64, r)
        rows += bench_selective_scan(2, 256, 64, 16, r, False) + bench_selective_scan(2, 256, 64, 16, r, True)
        rows += bench_gates(4, 256, 32, 64, r)
    else:
        rows = bench_linear_scan(16, 1024, 512, r) + bench_linear_scan(1, 1024, 64, r)
        rows += bench_log_space_scan(16, 1024, 512, r) + bench_log_space_scan(1, 1024, 64, r)
        rows += bench_selective_scan(args.s6_batch, 1024, 1024, 16, args.s6_repeats, False)
        rows += bench_selective_scan(args.s6_states_batch, 1024, 1024, 16, args.s6_repeats, True)
        rows += bench_gates(16, 1024, 128, 256, r) + bench_gates(1, 1024, 64, 64, r)
    print_table(rows)


if __name__ == "__main__":
    main()
