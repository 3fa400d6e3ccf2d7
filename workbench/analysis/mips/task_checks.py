"""Check a task's reference function on sample inputs before a search (`Task.validate`).

A MIPS task needs a function that gives one integer output (or a tuple of `n_outputs` integers) per
input step, deterministically, and causally: an RNN reads left to right, so the output at step t
may depend only on the inputs up to t. Each failure names the input and what was wrong.
"""

from __future__ import annotations

import itertools
import numbers
from typing import TYPE_CHECKING

import numpy as np

from workbench.analysis.mips.tasks import TaskDefinitionError

if TYPE_CHECKING:
    from workbench.analysis.mips.tasks import Task

__all__ = ["check_reference", "sample_inputs"]


def sample_inputs(task: Task, n_samples: int = 96, seed: int = 0) -> list[list]:
    """Every one-step input (up to 64 symbols), then random inputs of lengths 1-4, seq_len and 3 x seq_len."""
    symbols = task.alphabet if task.n_inputs == 1 else list(itertools.product(task.alphabet, repeat=task.n_inputs))
    rng = np.random.default_rng(seed)
    samples = [[s] for s in symbols[:64]]
    lengths = [int(n) for n in rng.integers(1, 5, size=n_samples // 2)]
    lengths += [task.seq_len] * (n_samples // 3) + [3 * task.seq_len] * (n_samples - n_samples // 2 - n_samples // 3)
    for length in lengths:
        samples.append([symbols[i] for i in rng.integers(0, len(symbols), size=length)])
    return samples


def _call(task: Task, xs: list) -> list:
    """`task.fn` on a copy of `xs`, with its failure or its mutation of the input as a TaskDefinitionError."""
    given = list(xs)
    try:
        out = task.fn(given)
    except Exception as exc:
        raise TaskDefinitionError(
            f"task {task.name!r}: the reference function raised {type(exc).__name__}: {exc} on the input {xs!r}"
        ) from exc
    if given != xs:
        raise TaskDefinitionError(
            f"task {task.name!r}: the reference function changed its input list {xs!r} to {given!r}; "
            "work on a copy"
        )
    if isinstance(out, np.ndarray):
        out = out.tolist()
    if not isinstance(out, list | tuple):
        raise TaskDefinitionError(
            f"task {task.name!r}: the reference function must return a list with one output per input step; "
            f"on the input {xs!r} it returned a {type(out).__name__}: {out!r}"
        )
    return list(out)


def _check_output(task: Task, xs: list, t: int, o: object) -> None:
    """One step's output: an integer (in the output alphabet), or a tuple of `n_outputs` of them."""
    where = f"task {task.name!r}: the reference function's output at step {t} of the input {xs!r} is {o!r}"
    values = o if task.n_outputs > 1 else (o,)
    if task.n_outputs > 1 and (not isinstance(o, tuple | list) or len(o) != task.n_outputs):
        raise TaskDefinitionError(f"{where}; with n_outputs={task.n_outputs} each output is a tuple of that many "
                                  "integers")
    if task.n_outputs == 1 and isinstance(o, tuple | list):
        raise TaskDefinitionError(f"{where}, a {type(o).__name__} of {len(o)}; for several output channels pass "
                                  f"n_outputs={len(o)}, else return one integer per step")
    for v in values:
        if not isinstance(v, numbers.Integral):
            hint = "; round it with int(...) if it is a whole number" if isinstance(v, numbers.Real) else ""
            raise TaskDefinitionError(f"{where}: outputs must be integers, got a {type(v).__name__}{hint}")
        if task.output_alphabet is not None and int(v) not in task.output_alphabet:
            lo, hi = task.output_alphabet[0], task.output_alphabet[-1]
            raise TaskDefinitionError(f"{where}: {v} is outside output_alphabet {lo}..{hi} "
                                      f"({len(task.output_alphabet)} values)")


def check_reference(task: Task, n_samples: int = 96, seed: int = 0) -> None:
    """Raise `TaskDefinitionError` unless `task.fn` is a deterministic, causal, one-integer-per-step function."""
    for xs in sample_inputs(task, n_samples, seed):
        out = _call(task, xs)
        if len(out) != len(xs):
            raise TaskDefinitionError(
                f"task {task.name!r}: the reference function returned {len(out)} outputs for the {len(xs)}-step "
                f"input {xs!r}; a MIPS task gives exactly one output per input step"
            )
        for t, o in enumerate(out):
            _check_output(task, xs, t, o)
        again = _call(task, xs)
        if again != out:
            raise TaskDefinitionError(
                f"task {task.name!r}: the reference function is not deterministic: the input {xs!r} gave {out!r}, "
                f"then {again!r}"
            )
        if len(xs) > 1:
            head = _call(task, xs[:-1])
            if head != out[:-1]:
                t = next(i for i, (a, b) in enumerate(zip(head, out, strict=False)) if a != b)
                raise TaskDefinitionError(
                    f"task {task.name!r}: the reference function is not causal: its output at step {t} is "
                    f"{head[t]!r} for the input {xs[:-1]!r} but {out[t]!r} once {xs[-1]!r} follows; an RNN reads "
                    "left to right, so step t's output may depend only on the inputs up to t"
                )
