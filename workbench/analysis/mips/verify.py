"""Verify a synthesised program against a task's reference function (stricter than Michaud et al. 2024, Sec. 4).

A program is accepted only if it equals the reference on every input sequence of length 1..N
(N = 8, or the largest length the alphabet allows within a budget; N is reported) and on 10,000
random sequences of length 10 and 1,000 of length 100. The program runs with no imports and only
a listed set of builtins.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbench.analysis.mips.fsm import symbols_of
from workbench.analysis.mips.tasks import Task, get_task

__all__ = ["ALLOWED_BUILTINS", "UnsafeProgramError", "Verification", "compile_program", "verify_program"]

ALLOWED_BUILTINS = {
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "bool": bool,
    "len": len,
    "range": range,
    "sum": sum,
    "divmod": divmod,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "zip": zip,
    "enumerate": enumerate,
}


class UnsafeProgramError(ValueError):
    """Program source that imports, touches attributes or dunder names, or defines no `program`."""


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


def compile_program(source: str) -> Callable[[list], list]:
    """Execute program source in a sandbox (no imports, no attributes, no dunders) and return `program`."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UnsafeProgramError(f"the program does not parse: {exc}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr != "append":
            raise UnsafeProgramError(
                f"the program reads the attribute {node.attr!r} (only list.append is allowed)"
            )
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Global | ast.Nonlocal):
            raise UnsafeProgramError(f"the program uses a forbidden construct: {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise UnsafeProgramError(f"the program names {node.id!r}")
    namespace: dict = {"__builtins__": dict(ALLOWED_BUILTINS)}
    exec(compile(tree, "<mips program>", "exec"), namespace)  # noqa: S102 - sandboxed above
    program = namespace.get("program")
    if not callable(program):
        raise UnsafeProgramError("the source defines no function `program(xs)`")
    return program


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


def verify_program(
    program: str | Callable,
    task: Task | str,
    *,
    max_length: int = 8,
    n_random: int = 10_000,
    n_long: int = 1_000,
    seed: int = 0,
) -> Verification:
    """Check `program` (source or callable) equals `task`'s reference exhaustively up to N and on random sequences."""
    task = get_task(task)
    try:
        fn = compile_program(program) if isinstance(program, str) else program
    except UnsafeProgramError as exc:
        return Verification(False, 0, 0, 0, error=str(exc))
    symbols = symbols_of(task)
    n = exhaustive_length(len(symbols), max_length)
    scope = {"n_symbols": len(symbols), "max_length": max_length}
    checked = 0

    def check(xs: list) -> Verification | None:
        expected = task.fn(xs)
        try:
            got = fn(list(xs))
        except Exception as exc:  # a crash is a failure, with its input
            return Verification(False, n, checked, 0, list(xs), expected, None, f"{type(exc).__name__}: {exc}",
                                **scope)
        if list(got) != list(expected):
            return Verification(False, n, checked, 0, list(xs), expected, list(got), **scope)
        return None

    for length in range(1, n + 1):
        for xs in itertools.product(symbols, repeat=length):
            bad = check(list(xs))
            if bad:
                return bad
            checked += 1
    rng = np.random.default_rng(seed)
    n_done = 0
    for count, length in ((n_random, 10), (n_long, 100)):
        idx = rng.integers(0, len(symbols), size=(count, length))
        for row in idx:
            bad = check([symbols[i] for i in row])
            if bad:
                bad.n_random = n_done
                return bad
            n_done += 1
    return Verification(True, n, checked, n_done, **scope)
