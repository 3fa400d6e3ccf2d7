"""The MIPS pipeline for one task (Michaud et al. 2024, Sec. 4): search architectures smallest first,
train to exactness, simplify, extract integer states (linear nets: every lattice reading, smallest
first) or minimised FSMs (nonlinear nets: every grouping of the hidden states), synthesise a program
from each, verify strictly; the first verified program wins (`solve_task`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from workbench.analysis.mips.clock import cpu_seconds
from workbench.analysis.mips.clustering import state_machines
from workbench.analysis.mips.fsm import FSM, minimize
from workbench.analysis.mips.lattice import Lattice, LatticeError, lattice_candidates
from workbench.analysis.mips.simplify import simplify_linear
from workbench.analysis.mips.synthesis import Program, program_from_fsm, program_from_lattice
from workbench.analysis.mips.tasks import Task, get_task
from workbench.analysis.mips.training import TrainedRNN, candidate_specs, train_rnn
from workbench.analysis.mips.verify import Verification, verify_program
from workbench.analysis.mips.work import check_work

__all__ = ["DEFAULT_BUDGET", "NEAR_EXACT", "STAGES", "STATE_ONLY", "SolveResult", "extract_program",
           "extraction_candidates", "solve", "solve_task", "state_readings", "synthesize"]

STAGES = ("train", "simplify", "extract", "synthesize", "verify")
DEFAULT_BUDGET = 80.0  # work-seconds of training search per task (`work.py`): the published runs' budget
# a nonlinear net this close to exact on held-out sequences is worth reading: the minimised
# machine is checked against the task itself, so a wrong reading only costs its verification
NEAR_EXACT = 0.95
# a linear net with an MLP readout this accurate may hold an exact integer state that its readout
# does not yet decode exactly: its state is read and the readout synthesised from the task's outputs
STATE_ONLY = 0.5


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
    near_exact_nets: int = 0  # nonlinear nets read at held-out accuracy in [near_exact, 1)
    state_only_nets: int = 0  # linear MLP-readout nets read at held-out accuracy in [state_only, 1)
    note: str = ""
    trained: TrainedRNN | None = field(default=None, repr=False)
    extraction: Lattice | FSM | None = field(default=None, repr=False)
    custom: bool = False  # not one of the paper's 62 tasks
    work: float = 0.0  # work-seconds of training charged to the search (`work.py`)
    artifacts: list[Path] = field(default_factory=list)  # files `solve(..., artifacts=folder)` wrote

    @property
    def fsm(self) -> FSM | None:
        """The minimised state machine the program was read from (nonlinear nets), else None."""
        return self.extraction if isinstance(self.extraction, FSM) else None

    @property
    def lattice(self) -> Lattice | None:
        """The integer lattice the program was read from (linear nets), else None."""
        return self.extraction if isinstance(self.extraction, Lattice) else None

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
            "near_exact_nets": self.near_exact_nets,
            "state_only_nets": self.state_only_nets,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "work": round(self.work, 1),
            "custom": self.custom,
        }


def state_readings(trained: TrainedRNN) -> Iterator[Lattice | FSM]:
    """Discrete readings of a trained net's states, smallest first: integer lattices (linear nets: observability
    basis by rank, then Krylov; an inexact net's state only, with the task's outputs) or minimised Moore
    machines (nonlinear nets: each grouping of the hidden states)."""
    if trained.spec.family == "linear":
        yield from lattice_candidates(trained, state_only=not trained.exact)
    else:
        yield from (minimize(m) for m in state_machines(trained))


def synthesize(reading: Lattice | FSM, task: Task) -> Program:
    """The program for one reading (raises ValueError when the data contradict a function)."""
    return program_from_lattice(reading, task) if isinstance(reading, Lattice) else program_from_fsm(reading, task)


def extraction_candidates(
    trained: TrainedRNN, max_candidates: int = 6, seconds: dict[str, float] | None = None
) -> Iterator[tuple[Lattice | FSM, Program]]:
    """Every distinct (states, program) reading of a trained net, smallest description first; failed readings
    are skipped. `seconds` gets the time spent reading states ("extract") and writing programs ("synthesize").
    """
    seconds = seconds if seconds is not None else dict.fromkeys(STAGES, 0.0)
    readings, seen, count = state_readings(trained), set(), 0
    while count < max_candidates:
        t0 = cpu_seconds()
        reading = next(readings, None)
        seconds["extract"] += cpu_seconds() - t0
        if reading is None:
            return
        variants = (False, True) if isinstance(reading, Lattice) else (False,)
        for extrema in variants:
            # a lattice's second program also reads the states' running extrema (a counter and "it
            # went below zero"); it is written and verified only when the first one fails
            t0 = cpu_seconds()
            try:
                program = (program_from_lattice(reading, trained.task, extrema=True) if extrema
                           else synthesize(reading, trained.task))
            except ValueError:  # contradictory data for a table: this reading is not a function
                continue
            finally:
                seconds["synthesize"] += cpu_seconds() - t0
            if program.source in seen:
                continue
            seen.add(program.source)
            count += not extrema
            yield reading, program


def extract_program(trained: TrainedRNN) -> tuple[Lattice | FSM, Program]:
    """The first (smallest) reading of the net and its program: integer lattice (linear) or minimised FSM."""
    for reading, program in extraction_candidates(trained):
        return reading, program
    raise LatticeError(f"{trained.task.name}: no state reading of {trained.spec.label()} gave a program")


def solve(
    task: Task | str,
    budget: float = DEFAULT_BUDGET,
    *,
    seeds: tuple[int, ...] = (0, 1),
    progress: bool = False,
    verbose: bool = False,
    artifacts: str | Path | None = None,
) -> SolveResult:
    """Find a verified program for `task` (a `Task` or a registered name) within `budget` work-seconds of
    training search (`work.py`: about CPU seconds of the reference machine, and the same on every machine).

    The task's reference function is checked first (`Task.validate`). The result holds the program,
    the FSM or lattice it came from (`.fsm`, `.lattice`), the verification record and, with
    `artifacts=folder`, the files written there (weights, states, program, verification).
    """
    budget = check_work("budget", budget, finite=True)
    task = get_task(task).validate()
    result = solve_task(task, budget=budget, seeds=seeds, progress=progress, verbose=verbose)
    if artifacts is not None:
        from workbench.analysis.mips.artifacts import save_artifacts

        result.artifacts = save_artifacts(result, artifacts)
    return result


def solve_task(
    task: Task | str,
    *,
    budget: float = DEFAULT_BUDGET,
    seeds: tuple[int, ...] = (0, 1),
    progress: bool = False,
    verbose: bool = False,
    mlp_share: float = 0.35,
    near_exact: float = NEAR_EXACT,
    state_only: float = STATE_ONLY,
) -> SolveResult:
    """Run the whole pipeline on one task within `budget` work-seconds of training search.

    With at most 20 input symbols (where the GRU/LSTM nets that follow are the likely solvers of
    a finite machine), linear nets with an MLP readout together get at most `mlp_share` of the
    budget: they train slowly and near-miss (Base_N_Addition: ~0.6-0.9 accuracy after 10-15 s
    each), and without the cap they used up the budget before GRU-16 was reached.

    A nonlinear net that ends at `near_exact` held-out accuracy or above is read too: its hidden
    states, grouped and minimised, often give the exact machine even when the net still errs on a
    few long sequences (a modular counter is a rotation a tanh/GRU net approximates slowly), and the
    program is verified strictly against the task, not against the net. A linear net with an MLP
    readout at `state_only` accuracy or above has its recurrent state read alone: when the states snap
    to an exact integer lattice (held-out sequences) whose snapped states give the net's own outputs,
    the readout is synthesised from the task's outputs over that lattice.

    The budget counts training work in work-seconds (`work.py`), never a clock, so a seeded search
    trains the same nets, stops at the same steps and gives the same result on any machine and any
    worker; reading states, synthesis and verification are bounded by candidate counts and the
    sandbox's limits instead. `result.seconds` reports CPU seconds per stage (`clock.cpu_seconds`;
    verification's are wall seconds of a sandboxed child): measured, never used to decide.
    """
    budget = check_work("budget", budget)
    task = get_task(task)
    result = SolveResult(task.name, custom=not task.number)
    capped = len(task.alphabet) <= 20
    mlp_left = mlp_share * budget if capped else float("inf")
    # no total: the search stops at the first verified program, however many candidates are left
    bar = tqdm(desc=f"MIPS {task.name} (networks tried)", unit="net", disable=not progress)
    for spec in candidate_specs(task, seeds):
        remaining = budget - result.work
        if remaining <= 1:
            result.note = result.note or f"no exact network within {budget:.0f} work-s"
            break
        limit = min(remaining, 30.0)
        if spec.readout == "mlp" and spec.family == "linear":
            if mlp_left <= 1:
                continue  # the MLP readouts' share of the budget is spent
            limit = min(limit, mlp_left)
        result.attempts += 1
        bar.update(1)
        bar.set_postfix_str(spec.label())
        t0 = cpu_seconds()
        trained = train_rnn(task, spec, work_limit=limit, progress=progress)
        result.seconds["train"] += cpu_seconds() - t0
        result.work += trained.work
        if spec.readout == "mlp" and spec.family == "linear":
            mlp_left -= trained.work
        if verbose:
            print(f"  {task.name} {spec.label()}: acc {trained.accuracy:.3f} in {trained.seconds:.1f} s")
        state_read = spec.family == "linear" and spec.readout == "mlp" and trained.accuracy >= state_only
        if not trained.exact and not (spec.family != "linear" and trained.accuracy >= near_exact) and not state_read:
            continue
        result.exact_nets += trained.exact
        result.near_exact_nets += not trained.exact and spec.family != "linear"
        result.state_only_nets += not trained.exact and spec.family == "linear"
        t0 = cpu_seconds()
        if spec.family == "linear" and trained.exact:
            simplify_linear(trained)
        result.seconds["simplify"] += cpu_seconds() - t0
        if _read_and_verify(trained, result, verbose):
            result.solved = True
            break
    bar.close()
    return result


def _read_and_verify(trained: TrainedRNN, result: SolveResult, verbose: bool) -> bool:
    """Verify every reading of one exact net until one passes; keep the best so far in `result`."""
    try:
        for extraction, program in extraction_candidates(trained, seconds=result.seconds):
            t1 = time.perf_counter()  # the program runs in a sandboxed child: wall-clock seconds
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
    except Exception as exc:  # a failed extraction moves on to the next network
        result.note = f"{trained.spec.label()}: {type(exc).__name__}: {exc}"[:300]
        if verbose:
            print("   ", result.note)
    return False
