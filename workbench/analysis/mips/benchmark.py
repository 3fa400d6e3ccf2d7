"""The MIPS pipeline per task and the whole 62-task suite (Michaud et al. 2024, Sec. 4 and Table 1).

`solve_task`: search architectures smallest first, train to exactness, simplify, extract integer
states (linear nets: every lattice reading, smallest first) or minimised FSMs (nonlinear nets: every
grouping of the hidden states), synthesise a program from each, verify strictly; the first verified
program wins. `run_benchmark` writes the results table and, per task, the artefacts (weights as
safetensors, the state machine or lattice, the program, the verification record). From a shell:

    python -m workbench.analysis.mips.benchmark --budget 100 --shard 0/16 --out shard0.md --programs progs
    python -m workbench.analysis.mips.benchmark --merge shard*.json --report benchmarks/mips_results.md
    python -m workbench.analysis.mips.benchmark --update benchmarks/mips_results.json --with rerun.json \
        --note "re-run on 2 shared cores"

Every run uses one torch thread and fixed seeds; only the wall-clock budget can cut a search short.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from workbench.analysis.mips.artifacts import save_artifacts
from workbench.analysis.mips.clustering import state_machines
from workbench.analysis.mips.fsm import FSM, minimize
from workbench.analysis.mips.lattice import Lattice, LatticeError, lattice_candidates
from workbench.analysis.mips.simplify import simplify_linear
from workbench.analysis.mips.synthesis import Program, program_from_fsm, program_from_lattice
from workbench.analysis.mips.tasks import TASKS, get_task, list_tasks
from workbench.analysis.mips.training import TrainedRNN, candidate_specs, train_rnn
from workbench.analysis.mips.verify import Verification, verify_program

__all__ = [
    "SolveResult",
    "extract_program",
    "extraction_candidates",
    "merge_results",
    "results_table",
    "run_benchmark",
    "solve_task",
    "update_results",
]

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


def extraction_candidates(trained: TrainedRNN, max_candidates: int = 6) -> Iterator[tuple[Lattice | FSM, Program]]:
    """Every (states, program) reading of a trained net, smallest description first; failed readings are skipped.

    Linear nets: integer lattices (observability basis by rank, then Krylov). Nonlinear nets: Moore
    machines from each grouping of the hidden states (behaviour probes, k-means), minimised.
    """
    task, seen, count = trained.task, set(), 0
    if trained.spec.family == "linear":
        readings: Iterator[Lattice | FSM] = iter(lattice_candidates(trained))
    else:
        readings = (minimize(m) for m in state_machines(trained))
    for reading in readings:
        try:
            program = (
                program_from_lattice(reading, task) if isinstance(reading, Lattice) else program_from_fsm(reading, task)
            )
        except ValueError:  # contradictory data for a table: this reading is not a function
            continue
        if program.source in seen:
            continue
        seen.add(program.source)
        yield reading, program
        count += 1
        if count >= max_candidates:
            return


def extract_program(trained: TrainedRNN) -> tuple[Lattice | FSM, Program]:
    """The first (smallest) reading of the net and its program: integer lattice (linear) or minimised FSM."""
    for reading, program in extraction_candidates(trained):
        return reading, program
    raise LatticeError(f"{trained.task.name}: no state reading of {trained.spec.label()} gave a program")


def solve_task(
    task,
    *,
    time_budget: float = 60.0,
    seeds: tuple[int, ...] = (0, 1),
    progress: bool = False,
    verbose: bool = False,
    mlp_share: float = 0.35,
) -> SolveResult:
    """Run the whole pipeline on one task within `time_budget` seconds of training search.

    With at most 20 input symbols (where the GRU/LSTM nets that follow are the likely solvers of
    a finite machine), linear nets with an MLP readout together get at most `mlp_share` of the
    budget: they train slowly and near-miss (Base_N_Addition: ~0.6-0.9 accuracy after 10-15 s
    each), and without the cap they used up the budget before GRU-16 was reached.
    """
    task = get_task(task)
    result = SolveResult(task.name)
    start = time.perf_counter()
    capped = len(task.alphabet) <= 20
    mlp_left = mlp_share * time_budget if capped else float("inf")
    # no total: the search stops at the first verified program, however many candidates are left
    bar = tqdm(desc=f"MIPS {task.name} (networks tried)", unit="net", disable=not progress)
    for spec in candidate_specs(task, seeds):
        remaining = time_budget - (time.perf_counter() - start)
        if remaining <= 1:
            result.note = result.note or f"no exact network within {time_budget:.0f} s"
            break
        limit = min(remaining, 30.0)
        if spec.readout == "mlp" and spec.family == "linear":
            if mlp_left <= 1:
                continue  # the MLP readouts' share of the budget is spent
            limit = min(limit, mlp_left)
        result.attempts += 1
        bar.update(1)
        bar.set_postfix_str(spec.label())
        t0 = time.perf_counter()
        trained = train_rnn(task, spec, time_limit=limit, progress=progress)
        result.seconds["train"] += time.perf_counter() - t0
        if spec.readout == "mlp" and spec.family == "linear":
            mlp_left -= time.perf_counter() - t0
        if verbose:
            print(f"  {task.name} {spec.label()}: acc {trained.accuracy:.3f} in {trained.seconds:.1f} s")
        if not trained.exact:
            continue
        result.exact_nets += 1
        t0 = time.perf_counter()
        if spec.family == "linear":
            simplify_linear(trained)
        result.seconds["simplify"] += time.perf_counter() - t0
        if _read_and_verify(trained, result, verbose):
            result.solved = True
            break
    bar.close()
    return result


def _read_and_verify(trained: TrainedRNN, result: SolveResult, verbose: bool) -> bool:
    """Verify every reading of one exact net until one passes; keep the best so far in `result`."""
    t0 = time.perf_counter()
    try:
        for extraction, program in extraction_candidates(trained):
            result.seconds["extract"] += time.perf_counter() - t0
            t1 = time.perf_counter()
            verification = verify_program(program.source, trained.task)
            result.seconds["verify"] += time.perf_counter() - t1
            if verbose:
                print(f"    {program.method}: {verification.summary()[:120]}")
            if result.program is None or verification.passed:
                result.rnn, result.method = trained.spec.label(), program.method
                result.program, result.verification = program, verification
                result.trained, result.extraction = trained, extraction
                result.n_states = extraction.n_states if isinstance(extraction, FSM) else extraction.rank
            if verification.passed:
                return True
            t0 = time.perf_counter()
        result.seconds["extract"] += time.perf_counter() - t0
    except Exception as exc:  # a failed extraction moves on to the next network
        result.seconds["extract"] += time.perf_counter() - t0
        result.note = f"{trained.spec.label()}: {type(exc).__name__}: {exc}"[:300]
        if verbose:
            print("   ", result.note)
    return False


def results_table(rows: list[dict], budget: float, rerun: list[str] | None = None, rerun_note: str = "") -> str:
    """Markdown table of result rows (`SolveResult.row()`), with solved counts against the paper.

    `rerun`: tasks whose rows come from a later run than the rest (marked `*`), said with `rerun_note`.
    """
    rerun = rerun or []
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
        *(
            [
                f"- re-run after the full run, same budget{f' ({rerun_note})' if rerun_note else ''}, "
                f"marked `*` below: {', '.join(rerun)}"
            ]
            if rerun
            else []
        ),
        "",
        "| # | task | solved | RNN | states | method | lines | verification | train s | extract s | verify s |"
        " paper MIPS | GPT-4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, t in zip(rows, tasks, strict=True):
        sec = r["seconds"]
        lines.append(
            f"| {t.number} | {r['task']}{'*' if r['task'] in rerun else ''} | {'yes' if r['solved'] else 'no'} | "
            f"{r['rnn'] or '-'} | "
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
    """Solve every task (all 62 by default); write the table to `out` (+ `.json` rows) and artefacts per task."""
    names = tasks or list_tasks()
    results = []
    for name in tqdm(names, desc="MIPS benchmark", unit="task", disable=not verbose):
        t0 = time.perf_counter()
        r = solve_task(name, time_budget=time_budget, verbose=False)
        results.append(r)
        if verbose:
            tqdm.write(
                f"{name}: {'SOLVED' if r.solved else 'no'} ({r.method or r.note[:80]}) "
                f"{time.perf_counter() - t0:.0f} s"
            )
        if out is not None:
            rows = [x.row() for x in results]
            Path(out).write_text(results_table(rows, time_budget))
            Path(out).with_suffix(".json").write_text(json.dumps({"budget": time_budget, "rows": rows}, indent=1))
        if programs_dir is not None:
            save_artifacts(r, programs_dir)
    return results


def merge_results(paths: list[str | Path], report: str | Path | None = None) -> list[dict]:
    """Rows of several shard runs (their `.json` files, or the `.md` beside them) in task order; writes `report`.

    The report's budget is the shards' budget (they must agree). A task present in several shards
    keeps its solved row if any. Also writes the merged rows beside the report as `.json`.
    """
    rows: dict[str, dict] = {}
    budgets = set()
    for p in paths:
        p = Path(p)
        p = p if p.suffix == ".json" else p.with_suffix(".json")
        if not p.exists():
            raise FileNotFoundError(f"no shard results at {p}")
        data = json.loads(p.read_text())
        shard_rows = data["rows"] if isinstance(data, dict) else data
        budgets.add(float(data["budget"]) if isinstance(data, dict) else float("nan"))
        for row in shard_rows:
            if row["task"] not in rows or (row["solved"] and not rows[row["task"]]["solved"]):
                rows[row["task"]] = row
    known = [b for b in budgets if b == b]
    if len(set(known)) > 1:
        raise ValueError(f"the shards ran with different budgets: {sorted(set(known))}")
    budget = known[0] if known else float("nan")
    merged = sorted(rows.values(), key=lambda r: get_task(r["task"]).number or 10**6)
    if report is not None:
        Path(report).write_text(results_table(merged, budget))
        Path(report).with_suffix(".json").write_text(json.dumps({"budget": budget, "rows": merged}, indent=1))
    return merged


def update_results(
    base: str | Path, shards: list[str | Path], report: str | Path | None = None, note: str = ""
) -> list[dict]:
    """Replace the rows of `base` (a merged results `.json`) for the tasks re-run in `shards`; rewrite both files.

    Every shard must have run with `base`'s budget. The re-run tasks are listed (cumulatively, in
    the JSON's `rerun`) and marked in the markdown, with `note` saying where they ran. Writes
    `base` and `report` (default: `base` with `.md`).
    """
    base = Path(base)
    data = json.loads(base.read_text())
    budget = float(data["budget"])
    rows = {r["task"]: r for r in data["rows"]}
    rerun = list(data.get("rerun", []))
    notes = [n for n in [data.get("rerun_note", ""), note] if n]
    for p in shards:
        p = Path(p)
        p = p if p.suffix == ".json" else p.with_suffix(".json")
        if not p.exists():
            raise FileNotFoundError(f"no shard results at {p}")
        shard = json.loads(p.read_text())
        if float(shard["budget"]) != budget:
            raise ValueError(f"{p} ran with budget {shard['budget']} s, the results with {budget} s")
        for row in shard["rows"]:
            rows[row["task"]] = row
            if row["task"] not in rerun:
                rerun.append(row["task"])
    merged = sorted(rows.values(), key=lambda r: get_task(r["task"]).number or 10**6)
    rerun.sort(key=lambda name: get_task(name).number or 10**6)
    rerun_note = "; ".join(dict.fromkeys(notes))
    Path(report or base.with_suffix(".md")).write_text(results_table(merged, budget, rerun, rerun_note))
    base.write_text(
        json.dumps({"budget": budget, "rows": merged, "rerun": rerun, "rerun_note": rerun_note}, indent=1)
    )
    return merged


def main(argv: list[str] | None = None) -> None:
    """Command line: run the suite (or one shard of it) and write the table; or merge shard results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training search per task")
    parser.add_argument("--out", default="benchmarks/mips_results.md")
    parser.add_argument("--programs", default=None, help="folder for the artefacts (program, weights, states)")
    parser.add_argument("--tasks", nargs="*", default=None, choices=sorted(TASKS), metavar="TASK")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th task starting at i")
    parser.add_argument("--merge", nargs="+", default=None, metavar="SHARD", help="shard outputs (.json or .md)")
    parser.add_argument("--report", default=None, help="with --merge or --update: the markdown table")
    parser.add_argument("--update", default=None, metavar="RESULTS_JSON", help="replace rows of these results")
    parser.add_argument("--with", dest="with_", nargs="+", default=None, metavar="SHARD", help="with --update")
    parser.add_argument("--note", default="", help="with --update: where the re-run tasks ran")
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
    names = args.tasks or list_tasks()
    if args.shard:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
        except ValueError:
            parser.error(f"--shard takes i/n (e.g. 3/16), got {args.shard!r}")
        if not 0 <= i < n:
            parser.error(f"--shard {args.shard}: need 0 <= i < n")
        names = names[i::n]
    results = run_benchmark(names, time_budget=args.budget, out=args.out, programs_dir=args.programs)
    print(f"solved {sum(r.solved for r in results)} / {len(results)}")


if __name__ == "__main__":
    main()
