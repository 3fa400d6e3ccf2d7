"""Recording cost of every mixer, measured side by side in one run (issue 2, item 7).

For LSTM, GRU, minGRU and S6 at batch 16, 1024 positions, width 512 on this machine's CPU, prints
  record/plain : fused path recording every gate and state / the plain forward with no hooks
                 (torch.nn.LSTM / GRU for the classic cells; our own unhooked fused forward for
                 minGRU and S6, which no library ships on CPU);
  ref/fused    : the readable reference loop / the fused path, both recording everything;
  core ref/fused: the same for the recurrence alone (the scan), without the input projections
                 that both paths share (minGRU, S6).
Run: python benchmarks/bench_paths.py [--batch 16 --length 1024 --width 512 --repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook, run_reference_loop


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best of `repeats` wall times after one warm-up call (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def recording(mixer: nn.Module, x: torch.Tensor, path: str) -> Callable[[], object]:
    """A call that runs `mixer` with a read-only recorder on every hook point."""
    store: dict[str, torch.Tensor] = {}
    record_every_hook(mixer, store)

    def run() -> object:
        store.clear()
        with torch.no_grad():
            return mixer(x, None, path)

    return run


def plain_forward(family: str, mixer: nn.Module, x: torch.Tensor) -> tuple[str, Callable[[], object]]:
    """The forward a user would run without the workbench, and its name."""
    if family in ("lstm", "gru"):
        cell = mixer.cell

        def run() -> object:
            with torch.no_grad():
                return cell(x)

        return f"torch.nn.{family.upper()}", run

    def run_unhooked() -> object:
        with torch.no_grad():
            return mixer(x, None, "fused")

    return "our fused forward, no hooks", run_unhooked


def core_ratio(family: str, mixer: nn.Module, x: torch.Tensor, repeats: int) -> str:
    """Reference loop / fused kernel for the recurrence alone, recording every state."""
    with torch.no_grad():
        if family == "mingru":
            a, b = mixer.coefficients(x)
            inputs, state, wanted = {"a": a, "b": b}, {"h": torch.zeros_like(a[:, 0])}, {"h"}

            def fused() -> object:
                from workbench.kernels import log_space_scan

                return log_space_scan(torch.log(a), torch.log(b))
        elif family == "s6":
            inputs, _, _ = mixer._parallel_inputs(x, torch.zeros(x.shape[0], mixer.cfg.d_hidden, 3))
            state = {"state": torch.zeros(x.shape[0], mixer.cfg.d_hidden, mixer.cfg.d_state)}
            wanted = {"state", "y"}

            def fused() -> object:
                from workbench.kernels import selective_scan

                return selective_scan(inputs["conv"], inputs["delta"], mixer.A, inputs["B"],
                                      inputs["C"], mixer.D, state["state"], return_states=True)
        else:
            return "-"
        length = x.shape[1]
        t_loop = best_time(lambda: run_reference_loop(mixer._step, inputs, state, wanted, length), 1)
        t_fused = best_time(fused, repeats)
    return f"{t_loop / t_fused:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", default="lstm,gru,mingru,s6")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.length} positions, width {args.width}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"{'family':<8} {'baseline':<28} {'record/plain':>12} {'ref/fused':>10} {'core ref/fused':>15}")
    for family in args.families.split(","):
        d_hidden = 2 * args.width if family == "s6" else args.width  # Mamba's expand = 2
        cfg = RecurrentConfig(family=family, n_layers=1, d_model=args.width, d_hidden=d_hidden,
                              d_vocab=2, d_state=16)
        x = torch.randn(args.batch, args.length, args.width)
        baseline_name, baseline = plain_forward(family, MIXERS[family](cfg), x)
        mixer = MIXERS[family](cfg)
        if family in ("lstm", "gru"):  # time the baseline on the very weights being recorded
            baseline_name, baseline = plain_forward(family, mixer, x)
        t_plain = best_time(baseline, args.repeats)
        t_fused = best_time(recording(mixer, x, "fused"), args.repeats)
        t_reference = best_time(recording(mixer, x, "reference"), 1)
        core = core_ratio(family, mixer, x, args.repeats)
        print(f"{family:<8} {baseline_name:<28} {t_fused / t_plain:>11.2f}x {t_reference / t_fused:>9.1f}x "
              f"{core:>15}", flush=True)


if __name__ == "__main__":
    main()
