"""Cost of the MIPS sandbox: `verify_program` (checked source, confined child process, batched) against the
old in-process `exec`, side by side on the suite's own verified programs; writes benchmarks/mips_sandbox_results.md.

The in-process baseline is reproduced here only for the measurement (the source is the suite's own
output, checked by the allow-list first): exec with the listed builtins, then the old one-sequence-at-a-time
loop over the same sequences. Run: `python benchmarks/bench_mips_sandbox.py` (one torch/numpy thread).
"""

from __future__ import annotations

import argparse
import builtins
import statistics
import time
from pathlib import Path

from workbench.analysis.mips.fsm import symbols_of
from workbench.analysis.mips.sandbox import ALLOWED_BUILTINS, check_program
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.verify import _sequences, exhaustive_length, verify_program

ROOT = Path(__file__).resolve().parent
TASKS = ("Parity_All", "Sum_Last2", "Binary_Addition", "Base_7_Addition", "Newton_Magnetic")


def in_process(source: str, task_name: str) -> bool:
    """The old route: exec the source here, then compare one sequence at a time."""
    task = get_task(task_name)
    namespace = {"__builtins__": {k: getattr(builtins, k) for k in ALLOWED_BUILTINS}}
    exec(compile(check_program(source), "<mips program>", "exec"), namespace)  # noqa: S102 - the suite's own output
    program = namespace["program"]
    symbols = symbols_of(task)
    for xs in _sequences(symbols, exhaustive_length(len(symbols)), 10_000, 1_000, 0):
        if list(program(list(xs))) != list(task.fn(xs)):
            return False
    return True


def main() -> None:
    """Time both routes, alternating, `--repeats` times per task; write the median seconds and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "mips_sandbox_results.md"))
    parser.add_argument("--note", default="", help="where it ran (cores, load)")
    args = parser.parse_args()
    rows = []
    for name in TASKS:
        source = (ROOT / "mips_programs" / f"{name}.py").read_text()
        old, new = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            assert in_process(source, name)
            old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            v = verify_program(source, name)
            new.append(time.perf_counter() - t0)
            assert v.passed, v.summary()
        n_seq = v.n_exhaustive + v.n_random
        o, s = statistics.median(old), statistics.median(new)
        rows.append(f"| {name} | {n_seq:,} | {o:.2f} | {s:.2f} | {s / o:.2f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# MIPS sandbox: verification cost against the old in-process exec",
        "",
        "`python benchmarks/bench_mips_sandbox.py`: each task's verified program from `mips_programs/`,",
        f"verified {args.repeats} times by each route, alternating, in one run; medians in seconds. The sandbox",
        "route includes starting the confined child (`python -I -S`), the marshal-in, JSON-out round trips,",
        "and computing the reference outputs here while the child checks the previous batch (on two free",
        "cores this can beat the single-process loop; on a busy machine it cannot).",
        *([f"Ran on: {args.note}."] if args.note else []),
        "",
        "| task | sequences | in-process s | sandbox s | sandbox / in-process |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
