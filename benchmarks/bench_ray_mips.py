"""The MIPS suite serially and fanned out on Ray, side by side in one run, with an estimate for N nodes.

Both runs solve the same tasks with the same budget and seeds, one torch thread per task: first one
after another in this process (`SerialExecutor`), then one task per Ray worker on a local cluster using
every core (`RayExecutor`; `--address` joins an existing one instead). Printed and written to `--out`:
both wall times and the speed-up against the physical limit (the cores, and the longest task), the
per-task times, whether every result is identical, and for N nodes of this machine's cores a worked
estimate from the task-time distribution: the lower bound max(sum / (N x cores), longest task) (the
straggler bound), and Ray's first-come list scheduling in task order plus this run's fixed cost.

    python benchmarks/bench_ray_mips.py                          # the fixed 16-task subset, budget 100 work-s
    python benchmarks/bench_ray_mips.py --tasks all --budget 100 # all 62 tasks (about 30 min serial here)
    python benchmarks/bench_ray_mips.py --tasks all --budget 80 --table benchmarks/mips_results.md \
        --programs benchmarks/mips_programs                       # and the Ray run is the published table
"""

from __future__ import annotations

import argparse
import heapq
import os
import platform
import time
from pathlib import Path

import torch

from workbench.analysis.mips import run_benchmark
from workbench.analysis.mips.tasks import list_tasks
from workbench.distributed import RayExecutor, SerialExecutor, connect
from workbench.distributed.cluster import import_ray

# Spread over the full suite's task-time distribution (benchmarks/mips_results.md): a few seconds to
# about a minute of training search each, every one solved there.
SUBSET = [
    "Bitwise_Or", "Current_Number", "Sum_All", "Newton_Spring", "Sum_Last3", "Prev2", "Perfect_Square_Detector",
    "Parity_Last2", "Bitwise_Xor", "Evens_Detector", "Sum_Last4", "Evens_Counter", "Parity_All", "Prev3",
    "Div_3", "Parity_Last4",
]  # fmt: skip


def task_seconds(result) -> float:
    """The task's own time: the sum of its pipeline stages."""
    return sum(result.seconds.values())


def list_schedule(times: list[float], workers: int) -> float:
    """Makespan when each task, in order, goes to the first worker free (Ray's FIFO dispatch)."""
    free = [0.0] * workers
    heapq.heapify(free)
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def same(a, b) -> bool:
    """Identical results: the row without seconds, the program, every trained weight."""
    row = lambda r: {k: v for k, v in r.row().items() if k != "seconds"}  # noqa: E731
    if row(a) != row(b) or (a.program and a.program.source) != (b.program and b.program.source):
        return False
    if (a.trained is None) != (b.trained is None):
        return False
    if a.trained is None:
        return True
    wa, wb = a.trained.model.state_dict(), b.trained.model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="task names, or 'all' (default: the 16-task subset)")
    parser.add_argument("--budget", type=float, default=100.0)
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--nodes", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--out", default="benchmarks/ray_results.md")
    parser.add_argument("--table", default=None,
                        help="also write the Ray run's results table here (e.g. benchmarks/mips_results.md)")
    parser.add_argument("--programs", default=None, help="with --table: the Ray run's artefacts folder")
    parser.add_argument("--serial-table", default=None,
                        help="write the serial run's table here as it goes (kept if the Ray half fails)")
    args = parser.parse_args()
    tasks = list_tasks() if args.tasks == ["all"] else (args.tasks or SUBSET)
    import_ray()  # without the extra, fail now rather than after the serial half
    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    serial = run_benchmark(tasks, budget=args.budget, verbose=True, executor=SerialExecutor(threads=1),
                           out=args.serial_table)
    serial_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray = connect(args.address)
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fanned = run_benchmark(tasks, budget=args.budget, verbose=True, executor=RayExecutor(args.address),
                           out=args.table, programs_dir=args.programs if args.table else None)
    ray_s = time.perf_counter() - t0
    load_after = os.getloadavg()

    times = [task_seconds(r) for r in serial]
    ray_times = [task_seconds(r) for r in fanned]
    differ = [a.task for a, b in zip(serial, fanned, strict=True) if not same(a, b)]
    identical = len(tasks) - len(differ)
    bound = max(sum(times) / cluster_cpus, max(times))
    overhead = max(0.0, ray_s - list_schedule(ray_times, cluster_cpus))
    lines = [
        "# MIPS suite: serial against Ray, one run",
        "",
        f"Command: `python benchmarks/bench_ray_mips.py{' --tasks ' + ' '.join(args.tasks) if args.tasks else ''}"
        f" --budget {args.budget:.0f}` (work-seconds per task); {len(tasks)} tasks, "
        f"{'the fixed subset (SUBSET in the script)' if not args.tasks else 'as given'}; one torch thread per task.",
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores, shared (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after); Ray {ray.__version__}, "
        f"{'local cluster' if args.address is None else 'cluster at ' + args.address} with {cluster_cpus} CPUs.",
        "",
        "| run | wall s | speed-up | physical limit |",
        "|---|---|---|---|",
        f"| serial (one process) | {serial_s:.1f} | 1.00 | |",
        f"| Ray, {cluster_cpus} workers (cluster start {start_s:.1f} s not included) | {ray_s:.1f} | "
        f"{serial_s / ray_s:.2f} | {serial_s / bound:.2f} (max(sum / {cluster_cpus} CPUs, longest task)) |",
        "",
        f"Identical results (row, program, every trained weight): {identical} / {len(tasks)}"
        f"{' (differ: ' + ', '.join(differ) + ')' if differ else ''}. "
        f"Solved: serial {sum(r.solved for r in serial)}, Ray {sum(r.solved for r in fanned)}. "
        f"Sum of task times: serial {sum(times):.1f} s, under Ray {sum(ray_times):.1f} s "
        f"({sum(ray_times) / sum(times):.2f}x: each task's own time when {cluster_cpus} run at once).",
        "",
        "## Task times (serial run)",
        "",
        "| task | solved | serial s | under Ray s |",
        "|---|---|---|---|",
        *(f"| {r.task} | {'yes' if r.solved else 'no'} | {t:.1f} | {u:.1f} |"
          for r, t, u in zip(serial, times, ray_times, strict=True)),
        "",
        f"Distribution: min {min(times):.1f} s, median {sorted(times)[len(times) // 2]:.1f} s, "
        f"max {max(times):.1f} s, sum {sum(times):.1f} s.",
        "",
        f"## Estimate for N nodes of {cores} cores",
        "",
        "From the task times above. Lower bound: max(sum / workers, longest task), the serial times (the "
        "longest task is the straggler no fan-out shortens). Estimate: Ray's dispatch (each task, in "
        "order, to the first free worker) of the task times measured under Ray (each node as loaded as "
        f"this one), plus this run's fixed cost: its wall time minus that schedule on {cluster_cpus} workers "
        f"= {overhead:.1f} s (starting the workers, importing torch and the workbench, dispatch).",
        "",
        "| N nodes | workers | lower bound s | list schedule s | estimate s | speed-up over serial |",
        "|---|---|---|---|---|---|",
    ]
    for n in args.nodes:
        workers = n * cores
        lower = max(sum(times) / workers, max(times))
        sched = list_schedule(ray_times, workers)
        lines.append(
            f"| {n} | {workers} | {lower:.1f} | {sched:.1f} | {sched + overhead:.1f} | "
            f"{serial_s / (sched + overhead):.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
