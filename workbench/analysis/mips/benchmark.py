"""The MIPS pipeline per task and the whole 62-task suite (Michaud et al. 2024, Sec. 4 and Table 1).

`solve_task`: search architectures smallest first, train to exactness, simplify, extract integer
states (linear nets) or a minimised FSM (GRUs), synthesise a program, verify it strictly; the first
verified program wins. `run_benchmark` writes the results table. From a shell:
`python -m workbench.analysis.mips.benchmark --budget 60 --out benchmarks/mips_results.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.analysis.mips.clustering import discretize_states
from workbench.analysis.mips.fsm import FSM, minimize
from workbench.analysis.mips.lattice import Lattice, integer_lattice
from workbench.analysis.mips.simplify import snap_weights, sparsify
from workbench.analysis.mips.synthesis import Program, program_from_fsm, program_from_lattice
from workbench.analysis.mips.tasks import TASKS, get_task, list_tasks
from workbench.analysis.mips.training import TrainedRNN, candidate_specs, train_rnn
from workbench.analysis.mips.verify import Verification, verify_program

__all__ = ["SolveResult", "extract_program", "results_table", "run_benchmark", "solve_task"]

STAGES = ("train", "simplify", "extract", "synthesize", "verify")


@dataclass
class SolveResult:
    """Outcome for one task: the network, the states, the program and its verification, seconds per stage."""

    task: str
    solved: bool = False
    rnn: str = ""
    n_states: int | None = None
    method: str = ""
    program: Program | None = None
    verification: Verification | None = None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    attempts: int = 0
    exact_nets: int = 0
    note: str = ""
    trained: TrainedRNN | None = field(default=None, repr=False)
    extraction: Lattice | FSM | None = field(default=None, repr=False)

    def row(self) -> dict:
        """Plain dict for the table and JSON."""
        return {
            "task": self.task,
            "solved": self.solved,
            "rnn": self.rnn,
            "states": self.n_states,
            "method": self.method,
            "program_lines": self.program.length if self.program else None,
            "verification": self.verification.summary() if self.verification else self.note,
            "attempts": self.attempts,
            "exact_nets": self.exact_nets,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def extract_program(trained: TrainedRNN) -> tuple[Lattice | FSM, Program]:
    """Integer lattice (linear recurrence) or minimised FSM (nonlinear), then the synthesised program."""
    if trained.spec.family == "linear":
        lattice = integer_lattice(trained)
        return lattice, program_from_lattice(lattice, trained.task)
    fsm = minimize(discretize_states(trained))
    return fsm, program_from_fsm(fsm, trained.task)


def solve_task(
    task,
    *,
    time_budget: float = 60.0,
    seeds: tuple[int, ...] = (0, 1),
    progress: bool = False,
    verbose: bool = False,
) -> SolveResult:
    """Run the whole pipeline on one task within `time_budget` seconds of training search."""
    task = get_task(task)
    result = SolveResult(task.name)
    start = time.perf_counter()
    for spec in candidate_specs(task, seeds):
        remaining = time_budget - (time.perf_counter() - start)
        if remaining <= 1:
            result.note = result.note or f"no exact network within {time_budget:.0f} s"
            break
        result.attempts += 1
        t0 = time.perf_counter()
        trained = train_rnn(task, spec, time_limit=min(remaining, 40.0), progress=progress)
        result.seconds["train"] += time.perf_counter() - t0
        if verbose:
            print(f"  {task.name} {spec.label()}: acc {trained.accuracy:.3f} in {trained.seconds:.1f} s")
        if not trained.exact:
            continue
        result.exact_nets += 1
        t0 = time.perf_counter()
        if spec.family == "linear":
            sparsify(trained, steps=100)
            snap_weights(trained)
        result.seconds["simplify"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            extraction, program = extract_program(trained)
        except Exception as exc:  # a failed extraction moves on to the next network
            result.seconds["extract"] += time.perf_counter() - t0
            result.note = f"{spec.label()}: {type(exc).__name__}: {exc}"[:300]
            if verbose:
                print("   ", result.note)
            continue
        result.seconds["extract"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        verification = verify_program(program.source, task)
        result.seconds["verify"] += time.perf_counter() - t0
        result.rnn, result.method, result.program, result.verification = (
            spec.label(),
            program.method,
            program,
            verification,
        )
        result.trained, result.extraction = trained, extraction
        result.n_states = extraction.n_states if isinstance(extraction, FSM) else extraction.rank
        if verbose:
            print("   ", verification.summary())
        if verification.passed:
            result.solved = True
            break
    return result


def results_table(rows: list[dict], budget: float) -> str:
    """Markdown table of result rows (`SolveResult.row()`), with solved counts against the paper."""
    solved = sum(r["solved"] for r in rows)
    tasks = [get_task(r["task"]) for r in rows]
    both = sum(r["solved"] and t.paper_mips for r, t in zip(rows, tasks, strict=True))
    only_here = sum(r["solved"] and not t.paper_mips for r, t in zip(rows, tasks, strict=True))
    only_paper = sum(t.paper_mips and not r["solved"] for r, t in zip(rows, tasks, strict=True))
    lines = [
        "# MIPS benchmark results (Michaud et al. 2024 tasks)",
        "",
        f"Solved **{solved} / {len(rows)}** under strict verification (every sequence up to length N, "
        "10,000 random of length 10 and 1,000 of length 100). Paper: MIPS 32/62, GPT-4 30/62, union 43/62.",
        f"Per-task training-search budget: {budget:.0f} s, one CPU thread. States: integer state variables "
        "(lattice) or FSM states after minimisation.",
        "",
        f"- solved here and by the paper's MIPS: {both}; here but not by MIPS: {only_here}; "
        f"by MIPS but not here: {only_paper}",
        "",
        "| # | task | solved | RNN | states | method | lines | verification | train s | extract s | verify s |"
        " paper MIPS | GPT-4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, t in zip(rows, tasks, strict=True):
        sec = r["seconds"]
        lines.append(
            f"| {t.number} | {r['task']} | {'yes' if r['solved'] else 'no'} | {r['rnn'] or '-'} | "
            f"{r['states'] if r['states'] is not None else '-'} | {r['method'] or '-'} | "
            f"{r['program_lines'] or '-'} | {str(r['verification']).replace('|', '/')} | {sec['train']:.1f} | "
            f"{sec['extract']:.1f} | {sec['verify']:.1f} | {'yes' if t.paper_mips else 'no'} | "
            f"{'yes' if t.paper_gpt4 else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def run_benchmark(
    tasks: list[str] | None = None,
    *,
    time_budget: float = 60.0,
    out: str | Path | None = None,
    programs_dir: str | Path | None = None,
    verbose: bool = True,
) -> list[SolveResult]:
    """Solve every task (all 62 by default), write the markdown table to `out` and programs beside it."""
    names = tasks or list_tasks()
    results = []
    for name in names:
        t0 = time.perf_counter()
        r = solve_task(name, time_budget=time_budget, verbose=False)
        results.append(r)
        if verbose:
            print(
                f"{name}: {'SOLVED' if r.solved else 'no'} ({r.method or r.note[:80]}) "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        if out is not None:
            Path(out).write_text(results_table([x.row() for x in results], time_budget))
            Path(out).with_suffix(".json").write_text(json.dumps([x.row() for x in results], indent=1))
        if programs_dir is not None and r.program is not None:
            Path(programs_dir).mkdir(parents=True, exist_ok=True)
            (Path(programs_dir) / f"{name}.py").write_text(r.program.source)
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: run the suite and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training search per task")
    parser.add_argument("--out", default="benchmarks/mips_results.md")
    parser.add_argument("--programs", default=None, help="folder for the synthesised programs")
    parser.add_argument("--tasks", nargs="*", default=None, choices=sorted(TASKS), metavar="TASK")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th task starting at i")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.tasks or list_tasks()
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        names = names[i::n]
    results = run_benchmark(names, time_budget=args.budget, out=args.out, programs_dir=args.programs)
    print(f"solved {sum(r.solved for r in results)} / {len(results)}")


if __name__ == "__main__":
    main()
