"""The 62 algorithmic tasks of the MIPS benchmark (Michaud et al. 2024, Table 1) as exact reference functions.

A task maps an input sequence to an output sequence, one output per step. A symbol is an `int` for a
one-channel task and a `tuple[int, ...]` for several channels (e.g. the two bit streams of
`Binary_Addition`); outputs likewise. `Task.generate` draws integer arrays `[batch, pos, channels]`.

Your own task is a `Task` (docs/mips.md): `Task("Count_Sevens", fn, alphabet=range(10))`. An
alphabet is every symbol: `range(10)` is 0..9, while the tuple `(0, 9)` is the two symbols 0 and 9.
`Task.validate` runs the reference function on sample inputs (one integer output per step,
deterministic, causal) before a search; `register_task` also adds a task to the registry by name.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "TASKS",
    "Task",
    "TaskDefinitionError",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "register_task",
]

Symbol = int | tuple[int, ...]


class UnknownTaskError(KeyError):
    """A task name that is not in the registry; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class TaskDefinitionError(ValueError):
    """A task whose name, alphabet or reference function cannot define a MIPS task; the message says which."""


def _symbols(task: str, argument: str, values: object) -> tuple[int, ...]:
    """An alphabet given as a range, list, tuple or array of integers -> its sorted distinct symbols."""
    if isinstance(values, str | bytes) or not isinstance(values, range | Sequence | set | frozenset | np.ndarray):
        raise TaskDefinitionError(
            f"task {task!r}: {argument} must be a range or a list of integers (e.g. range(10) for 0..9), "
            f"got {type(values).__name__} {values!r}"
        )
    bad = [v for v in values if not isinstance(v, numbers.Integral)]
    if bad:
        raise TaskDefinitionError(f"task {task!r}: {argument} must hold integers, got {bad[0]!r} "
                                  f"({type(bad[0]).__name__})")
    symbols = tuple(sorted({int(v) for v in values}))
    if not symbols:
        raise TaskDefinitionError(f"task {task!r}: {argument} is empty; give at least one symbol, e.g. range(2)")
    return symbols


def _describe(symbols: tuple[int, ...]) -> str:
    """`0..9 (10 values)` for a contiguous alphabet, else the symbols themselves with the tuple-vs-range hint."""
    lo, hi = symbols[0], symbols[-1]
    if hi - lo + 1 == len(symbols):
        return f"{lo}..{hi} ({len(symbols)} values)"
    shown = ", ".join(map(str, symbols[:12])) + (", ..." if len(symbols) > 12 else "")
    return (f"{{{shown}}} ({len(symbols)} symbols: a tuple or list names every symbol; "
            f"for {lo}..{hi} give range({lo}, {hi + 1}))")


@dataclass(frozen=True)
class Task:
    """One task: name, reference function, input alphabet, channels (Michaud et al. 2024, Sec. 4).

    `fn` maps an input list to an output list, one output per step. `alphabet`: a range or the list
    of every input symbol; `output_alphabet` (optional): the outputs allowed, checked by `validate`.
    `n_inputs` / `n_outputs`: channels per step (symbols and outputs are then tuples).
    """

    name: str
    fn: Callable[[list], list]
    alphabet: tuple[int, ...]  # a range or any integer sequence on input; stored as sorted symbols
    n_inputs: int = 1
    n_outputs: int = 1
    seq_len: int = 10
    description: str = ""
    number: int = 0
    paper_gpt4: bool = False
    paper_mips: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    output_alphabet: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.name):
            raise TaskDefinitionError(
                f"a task's name must start with a letter and hold only letters, digits, _ and - (it names its "
                f"files), got {self.name!r}"
            )
        if not callable(self.fn):
            raise TaskDefinitionError(f"task {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        for argument in ("n_inputs", "n_outputs", "seq_len"):
            value = getattr(self, argument)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise TaskDefinitionError(f"task {self.name!r}: {argument} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "alphabet", _symbols(self.name, "alphabet", self.alphabet))
        if self.output_alphabet is not None:
            object.__setattr__(self, "output_alphabet", _symbols(self.name, "output_alphabet", self.output_alphabet))

    def validate(self, n_samples: int = 96, seed: int = 0) -> Task:
        """Run `fn` on sample inputs: a list of one output per step, integers (in `output_alphabet`),
        the same twice, and causal (a prefix's outputs are a prefix of the outputs). Returns the task.

        Raises `TaskDefinitionError` naming the input and what was wrong.
        """
        from workbench.analysis.mips.task_checks import check_reference

        check_reference(self, n_samples, seed)
        return self

    def check_input(self, xs: Sequence[Symbol]) -> list[Symbol]:
        """Validate one input sequence: non-empty, right number of channels, every value in the alphabet."""
        xs = list(xs)
        if not xs:
            raise ValueError(f"{self.name}: the input sequence is empty; give at least one symbol")
        allowed = set(self.alphabet)
        for t, s in enumerate(xs):
            values = tuple(s) if isinstance(s, tuple | list) else (s,)
            if len(values) != self.n_inputs:
                raise ValueError(
                    f"{self.name}: symbol {s!r} at position {t} has {len(values)} channels, "
                    f"the task takes {self.n_inputs}"
                )
            for v in values:
                if not isinstance(v, numbers.Integral) or int(v) not in allowed:
                    raise ValueError(
                        f"{self.name}: symbol {s!r} at position {t} is outside the alphabet {_describe(self.alphabet)}"
                    )
        return [
            int(s) if self.n_inputs == 1 and not isinstance(s, tuple | list) else tuple(int(v) for v in s)
            for s in xs
        ]

    def __call__(self, xs: Sequence[Symbol]) -> list[Symbol]:
        """The reference output sequence for one checked input sequence."""
        return self.fn(self.check_input(xs))

    def generate(self, n: int, length: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`n` random sequences: inputs `[n, length, n_inputs]` and reference outputs `[n, length, n_outputs]`."""
        length = self.seq_len if length is None else length
        if n < 1 or length < 1:
            raise ValueError(f"{self.name}: need n >= 1 and length >= 1, got n={n}, length={length}")
        rng = np.random.default_rng(seed)
        alpha = np.asarray(self.alphabet)
        x = alpha[rng.integers(0, len(alpha), size=(n, length, self.n_inputs))]  # [n, T, c_in]
        y = np.asarray([self.outputs_array(seq) for seq in x], dtype=np.int64)  # [n, T, c_out]
        return x.astype(np.int64), y

    def outputs_array(self, seq: np.ndarray) -> list[list[int]]:
        """Reference outputs of one `[T, n_inputs]` array as a `[T, n_outputs]` nested list."""
        xs = [int(v[0]) for v in seq] if self.n_inputs == 1 else [tuple(int(a) for a in v) for v in seq]
        return [[int(o)] if self.n_outputs == 1 else [int(a) for a in o] for o in self.fn(xs)]


TASKS: dict[str, Task] = {}


def register_task(
    name: str | Task,
    fn: Callable[[list], list] | None = None,
    alphabet: Sequence[int] | range | None = None,
    *,
    n_inputs: int = 1,
    n_outputs: int = 1,
    seq_len: int = 10,
    description: str = "",
    number: int = 0,
    paper_gpt4: bool = False,
    paper_mips: bool = False,
    output_alphabet: Sequence[int] | range | None = None,
    overwrite: bool = False,
    validate: bool = True,
) -> Task:
    """Add a task to the registry (so it is found by name): a `Task`, or its name, function and alphabet.

    `validate` runs `Task.validate` first, so a faulty reference function fails here, not mid-search.
    """
    if isinstance(name, Task):
        task = name
    else:
        if alphabet is None:
            raise TaskDefinitionError(f"task {name!r}: give the input alphabet, e.g. range(10) for 0..9")
        task = Task(name, fn, alphabet, n_inputs, n_outputs, seq_len, description, number, paper_gpt4, paper_mips,
                    output_alphabet=output_alphabet)
    if task.name in TASKS and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered; pass overwrite=True to replace it")
    if validate:
        task.validate()
    TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """The registered task called `name` (a `Task` passes through); unknown names raise `UnknownTaskError`."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(name), TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see list_tasks()"
        raise UnknownTaskError(f"unknown MIPS task {name!r}{hint}")
    return TASKS[name]


def list_tasks() -> list[str]:
    """Registered task names in the paper's order (user tasks last)."""
    return sorted(TASKS, key=lambda n: (TASKS[n].number or 10**6, n))


# ------------------------------------------------------------------------------------- references
def _addition(base: int) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        carry, out = 0, []
        for a, b in xs:
            s = a + b + carry
            out.append(s % base)
            carry = s // base
        return out

    fn.__doc__ = f"Two base-{base} digit streams, least significant first -> sum digit; carry starts at 0."
    return fn


def _bitwise(op: Callable[[int, int], int]) -> Callable[[list], list]:
    return lambda xs: [op(a, b) for a, b in xs]


def _parity_last(k: int) -> Callable[[list], list]:
    return lambda xs: [sum(xs[max(0, t - k + 1) : t + 1]) % 2 for t in range(len(xs))]


def _sum_last(k: int) -> Callable[[list], list]:
    return lambda xs: [sum(xs[max(0, t - k + 1) : t + 1]) for t in range(len(xs))]


def _prev(k: int) -> Callable[[list], list]:
    return lambda xs: [xs[t - k] if t >= k else 0 for t in range(len(xs))]


def _running(step: Callable[[int, int], int], start: int) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        s, out = start, []
        for x in xs:
            s = step(s, x)
            out.append(s)
        return out

    return fn


def _majority(k: int) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        counts, out = [0] * (k + 1), []
        for x in xs:
            counts[x] += 1
            best = max(counts)
            out.append(counts.index(best))  # ties -> the lowest symbol
        return out

    return fn


def _pairwise(f: Callable[[int, int], int]) -> Callable[[list], list]:
    """Output f(x_t, x_{t-1}) with x_{-1} = 0."""
    return lambda xs: [f(x, xs[t - 1] if t else 0) for t, x in enumerate(xs)]


def _palindrome(xs: list) -> list:
    return [int(xs[: t + 1] == xs[: t + 1][::-1]) for t in range(len(xs))]


def _balanced(xs: list) -> list:
    depth, broken, out = 0, False, []
    for x in xs:
        depth += 1 if x == 0 else -1
        broken = broken or depth < 0
        out.append(int(depth == 0 and not broken))
    return out


def _alternating(k: int) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        out = []
        for t in range(len(xs)):
            w = xs[t - k + 1 : t + 1] if t >= k - 1 else None
            out.append(int(w is not None and all(w[i] != w[i + 1] for i in range(k - 1))))
        return out

    return fn


def _dot_mod2(xs: list) -> list:
    s, out = 0, []
    for a, b in xs:
        s = (s + a * b) % 2
        out.append(s)
    return out


def _div(k: int) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        r, out = 0, []
        for b in xs:
            r = 2 * r + b
            out.append(r // k)
            r %= k
        return out

    return fn


def _dithering(xs: list) -> list:
    s, out = 0, []
    for x in xs:
        out.append((s + x) // 15 - s // 15)
        s += x
    return out


def _newton(gravity: int = 0, spring: int = 0) -> Callable[[list], list]:
    def fn(xs: list) -> list:
        p = v = 0
        out = []
        for f in xs:
            v = v + f + gravity - spring * p
            p = p + v
            out.append(p)
        return out

    return fn


def _newton_magnetic(xs: list) -> list:
    px = py = vx = vy = 0
    out = []
    for fx, fy in xs:
        vx, vy = vx + fx + vy, vy + fy - vx
        px, py = px + vx, py + vy
        out.append((px, py))
    return out


BITS = (0, 1)
_SPEC: list[tuple] = [
    # (number, name, fn, alphabet, n_in, n_out, seq_len, gpt4, mips, description)
    (
        1,
        "Binary_Addition",
        _addition(2),
        BITS,
        2,
        1,
        10,
        False,
        True,
        "two bit streams, least significant first -> sum bit (carry starts at 0)",
    ),
    *[
        (
            k,
            f"Base_{k + 1}_Addition",
            _addition(k + 1),
            tuple(range(k + 1)),
            2,
            1,
            10,
            k + 1 == 6,
            False,
            f"two base-{k + 1} digit streams, least significant first -> sum digit",
        )
        for k in range(2, 7)
    ],
    (7, "Bitwise_Xor", _bitwise(lambda a, b: a ^ b), BITS, 2, 1, 10, True, True, "a xor b"),
    (8, "Bitwise_Or", _bitwise(lambda a, b: a | b), BITS, 2, 1, 10, True, True, "a or b"),
    (9, "Bitwise_And", _bitwise(lambda a, b: a & b), BITS, 2, 1, 10, True, True, "a and b"),
    (10, "Bitwise_Not", lambda xs: [1 - x for x in xs], BITS, 1, 1, 10, True, True, "1 - x"),
    (11, "Parity_Last2", _parity_last(2), BITS, 1, 1, 10, True, True, "x_t xor x_{t-1} (x_{-1} = 0)"),
    (12, "Parity_Last3", _parity_last(3), BITS, 1, 1, 10, False, True, "xor of the last 3 bits"),
    (13, "Parity_Last4", _parity_last(4), BITS, 1, 1, 10, False, False, "xor of the last 4 bits"),
    (14, "Parity_All", _running(lambda s, x: s ^ x, 0), BITS, 1, 1, 10, False, True, "running parity"),
    (
        15,
        "Parity_Zeros",
        _running(lambda s, x: s ^ (1 - x), 0),
        BITS,
        1,
        1,
        10,
        False,
        True,
        "parity of the number of zeros so far",
    ),
    (
        16,
        "Evens_Counter",
        _running(lambda s, x: s + (x % 2 == 0), 0),
        tuple(range(10)),
        1,
        1,
        10,
        False,
        False,
        "digits 0-9 -> count of even digits so far",
    ),
    (
        17,
        "Sum_All",
        _running(lambda s, x: s + x, 0),
        tuple(range(100)),
        1,
        1,
        10,
        True,
        True,
        "ints 0-99 -> running sum",
    ),
    *[
        (
            16 + k,
            f"Sum_Last{k}",
            _sum_last(k),
            tuple(range(100)),
            1,
            1,
            20 if k >= 5 else 10,
            k >= 4,
            True,
            f"sum of the last {k} inputs (zeros before the start)",
        )
        for k in range(2, 8)
    ],
    (24, "Current_Number", lambda xs: list(xs), tuple(range(100)), 1, 1, 10, True, True, "x_t"),
    *[
        (
            24 + k,
            f"Prev{k}",
            _prev(k),
            tuple(range(100)),
            1,
            1,
            20 if k == 5 else 10,
            True,
            True,
            f"x_(t-{k}), zero before the start",
        )
        for k in range(1, 6)
    ],
    (
        30,
        "Previous_Equals_Current",
        _pairwise(lambda a, b: int(a == b)),
        tuple(range(8)),
        1,
        1,
        10,
        False,
        True,
        "ints 0-7 -> [x_t == x_{t-1}] with x_{-1} = 0",
    ),
    (
        31,
        "Diff_Last2",
        _pairwise(lambda a, b: a - b),
        tuple(range(-100, 100)),
        1,
        1,
        10,
        False,
        True,
        "ints -100..99 -> x_t - x_{t-1} (x_{-1} = 0)",
    ),
    (
        32,
        "Abs_Diff",
        _pairwise(lambda a, b: abs(a - b)),
        tuple(range(-100, 100)),
        1,
        1,
        10,
        False,
        True,
        "abs(x_t - x_{t-1}) (x_{-1} = 0)",
    ),
    (
        33,
        "Abs_Current",
        lambda xs: [abs(x) for x in xs],
        tuple(range(-100, 100)),
        1,
        1,
        10,
        True,
        True,
        "ints -100..99 -> abs(x_t)",
    ),
    (
        34,
        "Diff_Abs_Values",
        _pairwise(lambda a, b: abs(a) - abs(b)),
        tuple(range(-100, 100)),
        1,
        1,
        10,
        True,
        False,
        "abs(x_t) - abs(x_{t-1}) (x_{-1} = 0)",
    ),
    (
        35,
        "Min_Seen",
        _running(min, 9),
        tuple(range(10)),
        1,
        1,
        10,
        True,
        False,
        "digits 0-9 -> running minimum (the first output is x_0)",
    ),
    (
        36,
        "Max_Seen",
        _running(max, 0),
        tuple(range(100)),
        1,
        1,
        10,
        True,
        False,
        "ints 0-99 -> running maximum",
    ),
    (37, "Majority_0_1", _majority(1), BITS, 1, 1, 10, True, False, "most frequent bit so far, ties -> 0"),
    (
        38,
        "Majority_0_2",
        _majority(2),
        (0, 1, 2),
        1,
        1,
        10,
        False,
        False,
        "most frequent of {0,1,2} so far, ties -> lowest",
    ),
    (
        39,
        "Majority_0_3",
        _majority(3),
        (0, 1, 2, 3),
        1,
        1,
        10,
        False,
        False,
        "most frequent of {0,1,2,3} so far, ties -> lowest",
    ),
    (
        40,
        "Evens_Detector",
        lambda xs: [int(x % 2 == 0) for x in xs],
        tuple(range(10)),
        1,
        1,
        10,
        True,
        False,
        "digit -> is it even",
    ),
    (
        41,
        "Perfect_Square_Detector",
        lambda xs: [int(x in (0, 1, 4, 9, 16)) for x in xs],
        tuple(range(20)),
        1,
        1,
        10,
        False,
        False,
        "ints 0-19 -> is it a perfect square",
    ),
    (42, "Bit_Palindrome", _palindrome, BITS, 1, 1, 10, True, False, "is the prefix so far a palindrome"),
    (
        43,
        "Balanced_Parenthesis",
        _balanced,
        BITS,
        1,
        1,
        10,
        False,
        False,
        "0 = '(', 1 = ')' -> is the prefix balanced (depth 0, never negative)",
    ),
    (
        44,
        "Parity_Bits_Mod2",
        lambda xs: [t % 2 for t in range(len(xs))],
        BITS,
        1,
        1,
        10,
        True,
        False,
        "t mod 2 (input ignored; t starts at 0)",
    ),
    (45, "Alternating_Last3", _alternating(3), BITS, 1, 1, 10, False, False, "last 3 bits are 010 or 101"),
    (46, "Alternating_Last4", _alternating(4), BITS, 1, 1, 10, True, False, "last 4 bits are 0101 or 1010"),
    (47, "Bit_Shift_Right", _prev(1), BITS, 1, 1, 10, True, True, "x_{t-1} (0 at the start)"),
    (48, "Bit_Dot_Prod_Mod2", _dot_mod2, BITS, 2, 1, 10, False, True, "running sum of a_i*b_i mod 2"),
    *[
        (
            49 + i,
            f"Div_{k}",
            _div(k),
            BITS,
            1,
            1,
            10,
            k == 3,
            False,
            f"bits, most significant first -> quotient bit of long division by {k}",
        )
        for i, k in enumerate((3, 5, 7))
    ],
    *[
        (
            49 + k,
            f"Add_Mod_{k}",
            _running(lambda s, x, k=k: (s + x) % k, 0),
            tuple(range(k)),
            1,
            1,
            10,
            k == 3,
            k == 3,
            f"ints 0..{k - 1} -> running sum mod {k}",
        )
        for k in range(3, 9)
    ],
    (
        58,
        "Dithering",
        _dithering,
        tuple(range(16)),
        1,
        1,
        10,
        True,
        False,
        "brightness 0-15 -> floor(S_t/15) - floor(S_{t-1}/15), S_0 = 0, S_t = S_{t-1} + x_t",
    ),
    (
        59,
        "Newton_Freebody",
        _newton(),
        tuple(range(-10, 11)),
        1,
        1,
        10,
        False,
        True,
        "force -10..10 -> position; v_t = v_{t-1} + F_t, p_t = p_{t-1} + v_t, p_0 = v_0 = 0",
    ),
    (
        60,
        "Newton_Gravity",
        _newton(gravity=-1),
        tuple(range(-10, 11)),
        1,
        1,
        10,
        False,
        True,
        "as Newton_Freebody with v_t = v_{t-1} + F_t - 1",
    ),
    (
        61,
        "Newton_Spring",
        _newton(spring=1),
        tuple(range(-10, 11)),
        1,
        1,
        10,
        False,
        True,
        "as Newton_Freebody with v_t = v_{t-1} + F_t - p_{t-1} (k = 1)",
    ),
    (
        62,
        "Newton_Magnetic",
        _newton_magnetic,
        tuple(range(-10, 11)),
        2,
        2,
        10,
        False,
        False,
        "2-D forces -> 2-D position; v_t = v_{t-1} + F_t + (vy, -vx)_{t-1}, p_t = p_{t-1} + v_t",
    ),
]

for _num, _name, _fn, _alpha, _nin, _nout, _len, _gpt4, _mips, _desc in _SPEC:
    register_task(
        _name,
        _fn,
        _alpha,
        n_inputs=_nin,
        n_outputs=_nout,
        seq_len=_len,
        description=_desc,
        number=_num,
        paper_gpt4=_gpt4,
        paper_mips=_mips,
        validate=False,  # tests/analysis/mips/test_tasks.py checks every built-in reference
    )
assert len(TASKS) == 62, len(TASKS)
