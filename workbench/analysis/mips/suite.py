"""The whole 62-task MIPS suite (Michaud et al. 2024, Table 1): run it (or a shard, or your own tasks),
write the results table and per-task artefacts, merge shards, replace re-run rows. Custom tasks get a
table of their own, without the paper's columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from workbench.analysis.mips.artifacts import save_artifacts
from workbench.analysis.mips.pipeline import DEFAULT_BUDGET, SolveResult, solve_task
from workbench.analysis.mips.tasks import TASKS, Task, get_task, list_tasks
from workbench.distributed import Executor, SerialExecutor

__all__ = ["SuiteSettings", "merge_results", "results_table", "run_benchmark", "solve_unit", "update_results"]


def _number(name: str) -> int:
    """The paper's task number, 0 for a task that is not one of its 62 (or not registered here)."""
    return TASKS[name].number if name in TASKS else 0


def _is_custom(row: dict) -> bool:
    """A row of a task outside the paper's 62 (rows written before the "custom" key: by registry number)."""
    return bool(row["custom"]) if "custom" in row else not _number(row["task"])


def _order(row: dict) -> tuple[int, str]:
    return (_number(row["task"]) or 10**6, row["task"])


def _cells(r: dict, rerun: list[str]) -> list[str]:
    """The columns every table shares, from `task` to `verify s`: the training work charged, then measured
    CPU seconds per stage."""
    sec = r["seconds"]
    return [
        f"{r['task']}{'*' if r['task'] in rerun else ''}", "yes" if r["solved"] else "no", r["rnn"] or "-",
        str(r["states"]) if r["states"] is not None else "-", r["method"] or "-", str(r["program_lines"] or "-"),
        str(r["verification"]).replace("|", "/"),
        f"{r['work']:.1f}" if "work" in r else "-",  # rows before work-second budgets have none
        f"{sec['train']:.1f}", f"{sec['extract']:.1f}",
        f"{sec['synthesize']:.1f}" if "custom" in r else "-",  # rows before then lumped it into extract
        f"{sec['verify']:.1f}",
    ]


_HEAD = ("| task | solved | RNN | states | method | lines | verification | train work-s | train s | extract s "
         "| synth s | verify s |")
_STRICT = ("under strict verification (every sequence up to length N, 10,000 random of length 10 and 1,000 of "
           "length 100)")


def _budget_line(budget: float) -> str:
    return (f"Per-task training-search budget: {budget:.0f} work-seconds (about CPU seconds of one core, "
            "counted the same on every machine), one thread. Stage columns are measured CPU seconds.")


def results_table(rows: list[dict], budget: float, rerun: list[str] | None = None, rerun_note: str = "") -> str:
    """Markdown of result rows (`SolveResult.row()`): the paper's tasks against the paper, custom tasks apart.

    `rerun`: tasks whose rows come from a later run than the rest (marked `*`), said with `rerun_note`.
    """
    rerun = rerun or []
    paper_rows = [r for r in rows if not _is_custom(r)]
    custom_rows = [r for r in rows if _is_custom(r)]
    lines = []
    if paper_rows:
        lines += _paper_table(paper_rows, budget, rerun, rerun_note)
    if custom_rows:
        solved = sum(r["solved"] for r in custom_rows)
        lines += [
            "## Custom tasks" if paper_rows else "# MIPS results (custom tasks)",
            "",
            f"Solved **{solved} / {len(custom_rows)}** {_STRICT}. Tasks defined by the user, not among the 62 of "
            f"Michaud et al. 2024. {_budget_line(budget)}",
            "",
            _HEAD,
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *("| " + " | ".join(_cells(r, rerun)) + " |" for r in custom_rows),
            "",
        ]
    return "\n".join(lines)


def _paper_table(rows: list[dict], budget: float, rerun: list[str], rerun_note: str) -> list[str]:
    """The 62-task table: solved counts and per-task columns against the paper's MIPS and GPT-4."""
    solved = sum(r["solved"] for r in rows)
    tasks = [get_task(r["task"]) for r in rows]
    both = sum(r["solved"] and t.paper_mips for r, t in zip(rows, tasks, strict=True))
    only_here = sum(r["solved"] and not t.paper_mips for r, t in zip(rows, tasks, strict=True))
    only_paper = sum(t.paper_mips and not r["solved"] for r, t in zip(rows, tasks, strict=True))
    lines = [
        "# MIPS benchmark results (Michaud et al. 2024 tasks)",
        "",
        f"Solved **{solved} / {len(rows)}** {_STRICT}. Paper: MIPS 32/62, GPT-4 30/62, union 43/62.",
        f"{_budget_line(budget)} States: integer state variables (lattice) or FSM states after minimisation.",
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
        "| # " + _HEAD + " paper MIPS | GPT-4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, t in zip(rows, tasks, strict=True):
        cells = [str(t.number), *_cells(r, rerun), "yes" if t.paper_mips else "no", "yes" if t.paper_gpt4 else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


@dataclass(frozen=True)
class SuiteSettings:
    """What every task of a suite run shares: the search budget (work-seconds) and the seeds tried per network."""

    budget: float = DEFAULT_BUDGET
    seeds: tuple[int, ...] = (0, 1)


def solve_unit(settings: SuiteSettings, task: str | Task) -> SolveResult:
    """One task of the suite (a name or a `Task`): the unit a fan-out runs (`workbench.distributed`)."""
    return solve_task(task, budget=settings.budget, seeds=settings.seeds, verbose=False)


def run_benchmark(
    tasks: list[str | Task] | None = None,
    *,
    budget: float = DEFAULT_BUDGET,
    out: str | Path | None = None,
    programs_dir: str | Path | None = None,
    verbose: bool = True,
    seeds: tuple[int, ...] = (0, 1),
    executor: Executor | None = None,
) -> list[SolveResult]:
    """Solve every task (names or `Task`s; all 62 by default); write the table to `out` (+ `.json` rows) and
    artefacts per task.

    `executor` runs the tasks (default: one after another in this process); a
    `workbench.distributed.RayExecutor` fans them out, one task per worker. The table is rewritten,
    in task order, as each task finishes. Results equal the serial run's: the budget counts
    work, not a clock (docs/cluster.md).
    """
    names = tasks or list_tasks()
    for task in names:
        if not isinstance(task, Task):
            get_task(task)  # an unknown task fails here, before any work is sent out
    labels = [task.name if isinstance(task, Task) else task for task in names]
    finished: dict[int, SolveResult] = {}

    def record(index: int, r: SolveResult) -> None:
        finished[index] = r
        if verbose:
            tqdm.write(
                f"{labels[index]}: {'SOLVED' if r.solved else 'no'} ({r.method or r.note[:80]}) "
                f"{sum(r.seconds.values()):.0f} s"
            )
        if out is not None:
            rows = [finished[i].row() for i in sorted(finished)]
            Path(out).write_text(results_table(rows, budget))
            Path(out).with_suffix(".json").write_text(json.dumps({"budget": budget, "rows": rows}, indent=1))
        if programs_dir is not None:
            save_artifacts(r, programs_dir)

    executor = executor or SerialExecutor(threads=None)
    settings = SuiteSettings(float(budget), tuple(seeds))
    return executor.map(solve_unit, names, context=settings, desc="MIPS benchmark", progress=verbose, on_result=record)


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
    merged = sorted(rows.values(), key=_order)
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
    merged = sorted(rows.values(), key=_order)
    rerun.sort(key=lambda name: (_number(name) or 10**6, name))
    rerun_note = "; ".join(dict.fromkeys(notes))
    Path(report or base.with_suffix(".md")).write_text(results_table(merged, budget, rerun, rerun_note))
    base.write_text(
        json.dumps({"budget": budget, "rows": merged, "rerun": rerun, "rerun_note": rerun_note}, indent=1)
    )
    return merged
