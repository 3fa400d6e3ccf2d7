"""Command line for the 62-task MIPS suite (Michaud et al. 2024, Table 1).

The pipeline per task is `workbench.analysis.mips.pipeline.solve_task`; the suite
(`workbench.analysis.mips.suite.run_benchmark`) writes the results table and, per task, the
artefacts (weights as safetensors, the state machine or lattice, the program, the verification
record). From a shell:

    python -m workbench.analysis.mips.benchmark --budget 100 --shard 0/16 --out shard0.md --programs progs
    python -m workbench.analysis.mips.benchmark --budget 100 --ray --out all.md   # fanned out on Ray
    python -m workbench.analysis.mips.benchmark --merge shard*.json --report benchmarks/mips_results.md
    python -m workbench.analysis.mips.benchmark --update benchmarks/mips_results.json --with rerun.json \
        --note "re-run on 2 shared cores"
    python -m workbench.analysis.mips.benchmark --task-file my_tasks.py --programs my_programs
    python -m workbench.analysis.mips.benchmark --task my_tasks:count_sevens --budget 30

Your own tasks (`--task-file`, `--task`; docs/mips.md) are checked first and written to their own
table (default `mips_custom_results.md`), without the paper's columns.

Every run uses one torch thread and fixed seeds, and the budget counts work, not a clock, so a run
gives the same results on any machine and any number of workers.
`--ray` runs one task per Ray worker on a local cluster (every core); `--address HOST:PORT` (or
$WORKBENCH_RAY_ADDRESS) joins an existing one (docs/cluster.md).
"""

from __future__ import annotations

import argparse

import torch

from workbench.analysis.mips.pipeline import DEFAULT_BUDGET
from workbench.analysis.mips.suite import merge_results, run_benchmark, update_results
from workbench.analysis.mips.task_files import tasks_from_file, tasks_from_reference
from workbench.analysis.mips.tasks import TASKS, Task, TaskDefinitionError, list_tasks
from workbench.distributed import ADDRESS_ENV, RayExecutor

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Command line: run the suite (or one shard of it) and write the table; or merge shard results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="work-seconds of training search per task")
    parser.add_argument("--out", default=None,
                        help="the table (default benchmarks/mips_results.md; mips_custom_results.md for your tasks)")
    parser.add_argument("--programs", default=None, help="folder for the artefacts (program, weights, states)")
    parser.add_argument("--tasks", nargs="*", default=None, choices=sorted(TASKS), metavar="TASK")
    parser.add_argument("--task-file", nargs="+", default=None, metavar="FILE",
                        help="Python file(s) defining Task objects: solve those tasks")
    parser.add_argument("--task", dest="task_refs", nargs="+", default=None, metavar="MODULE:OBJECT",
                        help="a Task, or a list of Tasks, importable as module:object")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th task starting at i")
    parser.add_argument("--merge", nargs="+", default=None, metavar="SHARD", help="shard outputs (.json or .md)")
    parser.add_argument("--report", default=None, help="with --merge or --update: the markdown table")
    parser.add_argument("--update", default=None, metavar="RESULTS_JSON", help="replace rows of these results")
    parser.add_argument("--with", dest="with_", nargs="+", default=None, metavar="SHARD", help="with --update")
    parser.add_argument("--note", default="", help="with --update: where the re-run tasks ran")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds tried per network size")
    parser.add_argument("--ray", action="store_true", help="fan the tasks out on Ray (a local cluster by default)")
    parser.add_argument("--address", default=None, help=f"join the Ray cluster at HOST:PORT (implies --ray; "
                        f"default ${ADDRESS_ENV})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.update:
        if not args.with_:
            parser.error("--update needs --with SHARD.json [...]")
        rows = update_results(args.update, args.with_, args.report, args.note)
        print(f"updated: solved {sum(r['solved'] for r in rows)} / {len(rows)}")
        return
    if args.merge:
        rows = merge_results(args.merge, args.report or args.out)
        print(f"merged {len(rows)} tasks: solved {sum(r['solved'] for r in rows)} / {len(rows)}")
        return
    if not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    custom = _custom_tasks(parser, args.task_file or [], args.task_refs or [])
    names: list[str | Task] = [*(args.tasks or []), *custom] or list_tasks()
    out = args.out or ("mips_custom_results.md" if custom else "benchmarks/mips_results.md")
    if args.shard:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
        except ValueError:
            parser.error(f"--shard takes i/n (e.g. 3/16), got {args.shard!r}")
        if not 0 <= i < n:
            parser.error(f"--shard {args.shard}: need 0 <= i < n")
        names = names[i::n]
    executor = RayExecutor(args.address) if args.ray or args.address else None
    results = run_benchmark(
        names, budget=args.budget, out=out, programs_dir=args.programs, seeds=tuple(args.seeds), executor=executor,
    )
    print(f"solved {sum(r.solved for r in results)} / {len(results)}")


def _custom_tasks(parser: argparse.ArgumentParser, files: list[str], references: list[str]) -> list[Task]:
    """The tasks of `--task-file` and `--task`, each checked (`Task.validate`); a bad one ends with its message."""
    try:
        tasks = [t for f in files for t in tasks_from_file(f)]
        tasks += [t for r in references for t in tasks_from_reference(r)]
        for task in tasks:
            task.validate()
    except (TaskDefinitionError, FileNotFoundError, ImportError) as exc:
        parser.error(str(exc))
    return tasks


if __name__ == "__main__":
    main()
