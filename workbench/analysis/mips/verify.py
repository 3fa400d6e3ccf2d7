"""Verify a synthesised program against a task's reference function (stricter than Michaud et al. 2024, Sec. 4).

A program is accepted only if it equals the reference on every input sequence of length 1..N
(N = 8, or the largest length the alphabet allows within a budget; N is reported) and on 10,000
random sequences of length 10 and 1,000 of length 100. Program source is checked against the
sandbox's allow-list and run in one confined child process (`sandbox.py`), batch by batch, while
this process computes the reference outputs of the next batch; nothing of it runs here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from workbench.analysis.mips.fsm import symbols_of
from workbench.analysis.mips.sandbox import (
    ALLOWED_BUILTINS,
    Sandbox,
    SandboxLimits,
    UnsafeProgramError,
    check_program,
)
from workbench.analysis.mips.sandbox_child import first_mismatch
from workbench.analysis.mips.tasks import Task, get_task

__all__ = ["ALLOWED_BUILTINS", "UnsafeProgramError", "Verification", "check_program", "verify_program"]

FIRST_BATCH, MAX_BATCH = 256, 16_384  # small first, so a wrong program fails fast; then doubling


@dataclass
class Verification:
    """Outcome of one verification: passed, how much was checked, the first counterexample."""

    passed: bool
    exhaustive_length: int  # every sequence of length 1..N was checked
    n_exhaustive: int
    n_random: int
    counterexample: list | None = None
    expected: list | None = None
    got: list | None = None
    error: str = ""
    n_symbols: int = 0  # the task's input symbols, which bound how long the exhaustive check can go
    max_length: int = 8  # the exhaustive length asked for
    # why it failed: "unsafe" (outside the allow-list), "mismatch", "exception", "memory", "cpu", "wall", ...
    reason: str = ""

    def summary(self) -> str:
        """One line: verified or not, with N and counts."""
        head = "verified" if self.passed else "FAILED"
        text = f"{head}: all {self.n_exhaustive} sequences up to length {self.exhaustive_length}"
        if self.n_symbols and self.exhaustive_length < self.max_length:
            text += (f" (of {self.n_symbols} symbols: length {self.max_length} would be "
                     f"{exhaustive_count(self.n_symbols, self.max_length):.3g} sequences, over the "
                     f"{EXHAUSTIVE_BUDGET:,} budget)")
        text += f", {self.n_random} random (lengths 10 and 100)"
        if not self.passed:
            text += f"; {self.error or f'counterexample {self.counterexample!r}'}"
        return text


EXHAUSTIVE_BUDGET = 200_000  # sequences the exhaustive part of a verification may check


def exhaustive_count(n_symbols: int, length: int) -> int:
    """How many sequences of length 1..length there are over `n_symbols` symbols."""
    return sum(n_symbols ** k for k in range(1, length + 1))


def exhaustive_length(n_symbols: int, max_length: int = 8, budget: int = EXHAUSTIVE_BUDGET) -> int:
    """Largest N <= max_length with sum_{L=1..N} n_symbols**L <= budget (at least 1)."""
    n, total = 0, 0
    while n < max_length and total + n_symbols ** (n + 1) <= budget:
        n += 1
        total += n_symbols**n
    return max(n, 1)


def _sequences(symbols: list, n: int, n_random: int, n_long: int, seed: int) -> Iterator[list]:
    """Every sequence of length 1..n, then `n_random` random ones of length 10 and `n_long` of length 100."""
    for length in range(1, n + 1):
        for xs in itertools.product(symbols, repeat=length):
            yield list(xs)
    rng = np.random.default_rng(seed)
    for count, length in ((n_random, 10), (n_long, 100)):
        for row in rng.integers(0, len(symbols), size=(count, length)):
            yield [symbols[i] for i in row]


def _batches(sequences: Iterator[list], task: Task) -> Iterator[tuple[list, list]]:
    """(inputs, reference outputs) in batches of FIRST_BATCH, doubling up to MAX_BATCH."""
    size = FIRST_BATCH
    while batch := list(itertools.islice(sequences, size)):
        yield batch, [task.fn(xs) for xs in batch]
        size = min(2 * size, MAX_BATCH)


def verify_program(
    program: str | Callable,
    task: Task | str,
    *,
    max_length: int = 8,
    n_random: int = 10_000,
    n_long: int = 1_000,
    seed: int = 0,
    limits: SandboxLimits | None = None,
) -> Verification:
    """Check `program` equals `task`'s reference exhaustively up to N and on random sequences.

    Source runs in the sandbox within `limits` (`SandboxLimits()`: 60 CPU seconds, 1 GiB, 180 s
    waiting); a callable is the caller's own code and runs here.
    """
    task = get_task(task)
    symbols = symbols_of(task)
    n = exhaustive_length(len(symbols), max_length)
    n_exhaustive = sum(len(symbols) ** k for k in range(1, n + 1))
    scope = {"n_symbols": len(symbols), "max_length": max_length}
    if isinstance(program, str):
        try:
            check_program(program)
        except UnsafeProgramError as exc:
            return Verification(False, 0, 0, 0, error=str(exc), reason="unsafe", **scope)
        box = Sandbox(program, limits)
        check, finish = box.check, box.close
    elif callable(program):
        box = None

        def check(inputs: list, expected: list) -> dict | None:
            return first_mismatch(program, inputs, expected)

        def finish() -> None:
            return None
    else:
        raise TypeError(f"program must be source text or a callable, got {type(program).__name__}")
    done, pending = 0, None
    try:
        for inputs, expected in _batches(_sequences(symbols, n, n_random, n_long, seed), task):
            if box is not None:  # the child works on this batch while the next one is prepared
                if pending is not None and (bad := box.receive()) is not None:
                    return _failed(bad, *pending, n, n_exhaustive, scope)
                if box.failure is not None:
                    return _failed(box.failure, done, [], [], n, n_exhaustive, scope)
                box.send({"inputs": inputs, "expected": expected})
                pending = (done, inputs, expected)
            elif (bad := check(inputs, expected)) is not None:
                return _failed(bad, done, inputs, expected, n, n_exhaustive, scope)
            done += len(inputs)
        if pending is not None and (bad := box.receive()) is not None:
            return _failed(bad, *pending, n, n_exhaustive, scope)
    finally:
        finish()
    return Verification(True, n, n_exhaustive, done - n_exhaustive, **scope)


def _failed(bad: dict, offset: int, inputs: list, expected: list, n: int, n_exhaustive: int,
            scope: dict) -> Verification:
    """The failed verdict for a failure record of the batch that started at sequence `offset`."""
    if bad.get("index") is None:  # the child failed as a whole (a limit, a crash): no one input to blame
        checked = offset
        xs = want = None
    else:
        checked = offset + bad["index"]
        xs, want = inputs[bad["index"]], expected[bad["index"]]
    got = bad.get("got")
    if isinstance(got, list):  # several output channels come back as lists: tuples, as the reference gives
        got = [tuple(g) if isinstance(g, list) else g for g in got]
    want = None if want is None else list(want)
    return Verification(
        False, n, min(checked, n_exhaustive), max(checked - n_exhaustive, 0), xs, want, got,
        bad.get("error", ""), reason=bad.get("kind", "failed"), **scope,
    )
