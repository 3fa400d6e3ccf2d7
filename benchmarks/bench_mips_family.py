"""Add_Mod_3..10 through the whole MIPS pipeline at the standard budget, one task after another.

Prints one row per modulus (solved, network, its held-out accuracy, states, CPU seconds per stage)
and writes benchmarks/mips_family_results.md. Budgets are work-seconds (see mips/work.py), so the
table does not depend on what else the machine is running; wall seconds are printed beside them.

    python benchmarks/bench_mips_family.py [--budget 80] [--moduli 3 4 ... 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from workbench.analysis.mips.families import add_mod_family
from workbench.analysis.mips.pipeline import NEAR_EXACT, solve_task

RESULTS = Path(__file__).with_name("mips_family_results.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=80.0, help="training-search budget, work-seconds")
    parser.add_argument("--moduli", type=int, nargs="+", default=list(range(3, 11)))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for task in add_mod_family(args.moduli):
        wall = time.perf_counter()
        result = solve_task(task, budget=args.budget)
        wall = time.perf_counter() - wall
        accuracy = f"{result.trained.accuracy:.4f}" if result.trained is not None else "-"
        seconds = result.seconds
        row = (
            f"| {task.name} | {'yes' if result.solved else 'no'} | {result.rnn or '-'} | {accuracy} | "
            f"{result.n_states if result.n_states is not None else '-'} | {result.method or '-'} | "
            f"{seconds['train']:.1f} | {seconds['extract']:.1f} | {seconds['verify']:.1f} | {wall:.0f} | "
            f"{(result.verification.summary() if result.verification else result.note)[:90]} |"
        )
        print(row, flush=True)
        rows.append((result.solved, row))
    solved = sum(s for s, _ in rows)
    header = [
        "# MIPS on the modular-counter family Add_Mod_k",
        "",
        f"Solved **{solved} / {len(rows)}** under strict verification, {args.budget:.0f} work-s training-search "
        f"budget per task, one torch thread. Nonlinear nets at held-out accuracy >= {NEAR_EXACT} are read "
        "(the near-exact route); `accuracy` is the read net's. CPU seconds per stage; wall seconds depend on "
        "the machine's load.",
        "",
        "| task | solved | RNN | accuracy | states | method | train CPU-s | extract CPU-s | verify CPU-s | wall s "
        "| verification |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    RESULTS.write_text("\n".join(header + [r for _, r in rows]) + "\n")
    print(f"{solved}/{len(rows)} solved; wrote {RESULTS}")


if __name__ == "__main__":
    main()
