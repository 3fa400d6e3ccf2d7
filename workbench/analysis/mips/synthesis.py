"""Symbolic regression for update and output functions, and the emitted Python program (Michaud et al. 2024, Sec. 3.4).

Integer regression: a linear fit with integer coefficients first, then a bottom-up search over
expressions with +, -, *, //, %, abs, min, max, comparisons and bit operations, deduplicated by
their values on the data (observational equivalence). Boolean regression: truth tables -> minimal
sum of products with sympy's `SOPform`. Functions of unbounded integer states that none of these
fit: a small if-else over comparisons (`decision.decision_tree`) before any lookup table. The
program is source text of one function `program(xs)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.analysis.mips.decision import decision_tree

__all__ = [
    "Program",
    "boolean_formula",
    "emit_program",
    "fit_integer_linear",
    "render_linear",
    "search_expression",
]

_BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "//": lambda a, b: np.floor_divide(a, b),
    "%": lambda a, b: np.mod(a, b),
    "min": np.minimum,
    "max": np.maximum,
    "==": lambda a, b: (a == b).astype(np.int64),
    "<": lambda a, b: (a < b).astype(np.int64),
    "^": np.bitwise_xor,
    "&": np.bitwise_and,
    "|": np.bitwise_or,
}
_COMMUTATIVE = {"+", "*", "min", "max", "==", "^", "&", "|"}


@dataclass
class Program:
    """Source of `program(xs) -> ys`, how it was found, and its size."""

    source: str
    method: str
    n_states: int

    @property
    def length(self) -> int:
        """Non-blank, non-docstring source lines."""
        return sum(
            1 for line in self.source.splitlines() if line.strip() and not line.strip().startswith('"""')
        )


def _render(op: str, a: str, b: str) -> str:
    if op in ("min", "max"):
        return f"{op}({a}, {b})"
    if op in ("==", "<"):
        return f"int({a} {op} {b})"
    return f"({a} {op} {b})"


def search_expression(
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    constants: Sequence[int] = (0, 1, 2),
    max_size: int = 7,
    max_per_size: int = 4000,
) -> str | None:
    """Smallest expression over `columns` (name -> int values) equal to `target` on every row, or None."""
    target = np.asarray(target, dtype=np.int64)
    rows = np.unique(
        np.stack([*(np.asarray(v, dtype=np.int64) for v in columns.values()), target], 1), axis=0
    )
    if len(rows) > 400:
        rows = rows[np.random.default_rng(0).choice(len(rows), 400, replace=False)]
    cols = {k: rows[:, i] for i, k in enumerate(columns)}
    tgt = rows[:, -1]
    seen: dict[bytes, str] = {}
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {1: []}

    def add(size: int, expr: str, val: np.ndarray) -> bool:
        key = val.tobytes()
        if key in seen:
            return False
        seen[key] = expr
        by_size.setdefault(size, []).append((expr, val))
        return bool(np.array_equal(val, tgt))

    for name, val in cols.items():
        if add(1, name, val):
            return _check_full(name, columns, target)
    for c in dict.fromkeys(int(c) for c in constants):
        if add(1, str(c), np.full(len(tgt), c, dtype=np.int64)):
            return str(c)
    with np.errstate(all="ignore"):
        for size in range(2, max_size + 1):
            for expr, val in by_size.get(size - 1, []):
                if len(by_size.get(size, [])) >= max_per_size:
                    break
                if add(size, f"abs({expr})", np.abs(val)):
                    found = _check_full(f"abs({expr})", columns, target)
                    if found:
                        return found
            # balanced splits first: with (1, size - 2) first, `x + <size-3 expr>` alone can fill the
            # per-size cap, and `(abs(z0) - abs(z1))` (Diff_Abs_Values, a (2, 2) split) was never built
            for left in sorted(range(1, size - 1), key=lambda k: (max(k, size - 1 - k), k)):
                right = size - 1 - left
                for op, f in _BINARY.items():
                    for ea, va in by_size.get(left, []):
                        if len(by_size.get(size, [])) >= max_per_size:
                            break
                        for eb, vb in by_size.get(right, []):
                            if op in _COMMUTATIVE and left == right and ea > eb:
                                continue
                            if op in ("//", "%") and (vb == 0).any():
                                continue
                            val = f(va, vb)
                            if np.abs(val).max(initial=0) > 10**12:
                                continue
                            expr = _render(op, ea, eb)
                            if add(size, expr, val):
                                found = _check_full(expr, columns, target)
                                if found:
                                    return found
    return None


def _check_full(expr: str, columns: dict[str, np.ndarray], target: np.ndarray) -> str | None:
    """The expression, if it also matches every (not only the sampled) row."""
    env = {k: np.asarray(v, dtype=np.int64) for k, v in columns.items()}
    env.update(
        {"abs": np.abs, "min": np.minimum, "max": np.maximum, "int": lambda v: np.asarray(v, np.int64)}
    )
    with np.errstate(all="ignore"):
        try:
            val = eval(expr.replace("//", "//"), {"__builtins__": {}}, env)  # noqa: S307 - our own expression
        except Exception:
            return None
    return expr if np.array_equal(np.broadcast_to(np.asarray(val), np.shape(target)), target) else None


def fit_integer_linear(columns: dict[str, np.ndarray], target: np.ndarray) -> dict[str, int] | None:
    """Integer coefficients (and '1' for the constant) with target == sum(c * column) on every row, or None.

    Least squares, rounded, checked exactly. Collinear columns make the least-squares solution
    non-integer even when an integer one exists, so the fit is retried on a maximal independent
    subset of the columns, taken in the given order and in reverse.
    """
    names = list(columns)
    a = np.stack([np.asarray(columns[k], dtype=np.float64) for k in names] + [np.ones(len(target))], 1)
    pred = np.stack(
        [np.asarray(columns[k], dtype=np.int64) for k in names] + [np.ones(len(target), np.int64)], 1
    )
    tgt = np.asarray(target, dtype=np.int64)
    keys = [*names, "1"]
    for subset in _column_subsets(a):
        coef, *_ = np.linalg.lstsq(a[:, subset], np.asarray(target, dtype=np.float64), rcond=None)
        ints = np.zeros(len(keys), dtype=np.int64)
        ints[subset] = np.round(coef).astype(np.int64)
        if np.array_equal(pred @ ints, tgt):
            return {k: int(c) for k, c in zip(keys, ints, strict=True) if c != 0}
    return None


def _column_subsets(a: np.ndarray) -> list[list[int]]:
    """All columns, then (if they are dependent) a greedy independent subset in order and in reverse order."""
    full = list(range(a.shape[1]))
    if np.linalg.matrix_rank(a) == a.shape[1]:
        return [full]
    subsets = [full]
    for order in (full[-1:] + full[:-1], full[::-1]):  # the constant first, then the columns either way
        chosen: list[int] = []
        for j in order:
            if np.linalg.matrix_rank(a[:, [*chosen, j]]) == len(chosen) + 1:
                chosen.append(j)
        subsets.append(sorted(chosen))
    return subsets


def render_linear(coefs: dict[str, int]) -> str:
    """`{'z0': 1, 'x': -1, '1': 2}` -> `z0 - x + 2`, simplified by sympy."""
    import sympy

    expr = sum(
        (c * (sympy.Integer(1) if k == "1" else sympy.Symbol(k)) for k, c in coefs.items()), sympy.Integer(0)
    )
    return str(sympy.expand(expr))


def boolean_formula(columns: dict[str, np.ndarray], target: np.ndarray) -> str | None:
    """Minimal sum of products (sympy `SOPform`) of 0/1 columns equal to a 0/1 target; unseen rows are don't-cares."""
    import itertools

    import sympy
    from sympy.logic import SOPform

    names = list(columns)
    arr = np.stack([np.asarray(columns[k]) for k in names], 1)
    target = np.asarray(target)
    if not (np.isin(arr, (0, 1)).all() and np.isin(target, (0, 1)).all()) or len(names) > 10:
        return None
    table: dict[tuple, int] = {}
    for row, t in zip(map(tuple, arr.tolist()), target.tolist(), strict=True):
        if table.setdefault(row, t) != t:
            return None  # contradictory truth table
    ones = [list(r) for r, t in table.items() if t == 1]
    if not ones:
        return "0"
    dont = [list(r) for r in itertools.product((0, 1), repeat=len(names)) if r not in table]
    if len(ones) + len(dont) == 2 ** len(names):
        return "1"
    syms = sympy.symbols(names)
    return _py_bool(SOPform(syms, ones, dont))


def _py_bool(e) -> str:
    """A sympy Boolean expression as Python on 0/1 ints."""
    from sympy import And, Not, Or

    if isinstance(e, Not):
        return f"(1 - {_py_bool(e.args[0])})"
    if isinstance(e, And):
        return "(" + " & ".join(_py_bool(a) for a in e.args) + ")"
    if isinstance(e, Or):
        return "(" + " | ".join(_py_bool(a) for a in e.args) + ")"
    return str(e)


def emit_program(
    name: str,
    method: str,
    n_inputs: int,
    n_outputs: int,
    state: dict[str, int],
    updates: dict[str, str],
    outputs: list[str],
    tables: dict[str, dict] | None = None,
    note: str = "",
) -> Program:
    """Source of `program(xs)`: state variables, their simultaneous update per step, the outputs."""
    xs_target = "x" if n_inputs == 1 else ", ".join(f"x{i}" for i in range(n_inputs))
    lines = [
        "def program(xs):",
        f'    """{name}: synthesised by MIPS from a trained RNN ({method}). {note}"""'.rstrip(),
    ]
    for tname, table in (tables or {}).items():
        lines.append(f"    {tname} = {table!r}")
    for var, init in state.items():
        lines.append(f"    {var} = {init}")
    lines.append("    ys = []")
    lines.append(f"    for {xs_target} in xs:")
    if updates:
        lines.append(f"        {', '.join(updates)} = {', '.join(updates.values())}")
    out = outputs[0] if n_outputs == 1 else "(" + ", ".join(outputs) + ")"
    lines.append(f"        ys.append({out})")
    lines.append("    return ys")
    return Program("\n".join(lines) + "\n", method, len(state))


# ----------------------------------------------------------------------------------------- whole programs
def _input_columns(task, x: np.ndarray) -> dict[str, np.ndarray]:
    """Input variables by name (`x`, or `x0`, `x1`, ...) from integer inputs `[..., n_inputs]`."""
    if task.n_inputs == 1:
        return {"x": x[..., 0].ravel()}
    return {f"x{c}": x[..., c].ravel() for c in range(task.n_inputs)}


def _constants(task) -> list[int]:
    return [0, 1, 2, len(task.alphabet), max(task.alphabet)]


def _regress(
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    task,
    tables: dict,
    table_name: str,
    max_size: int = 7,
    tree: bool = False,
) -> tuple[str, str]:
    """Expression for target: integer-linear, else searched, else Boolean, else (`tree`) an if-else over
    comparisons, else a lookup table. (expr, how).

    `tree` is for functions of unbounded integer states (lattices), where a table keyed on the states
    seen in the data cannot cover longer sequences; a finite machine's table is total and needs none.
    """
    coefs = fit_integer_linear(columns, target)
    if coefs is not None:
        return render_linear(coefs) if coefs else "0", "linear"
    found = search_expression(columns, target, _constants(task), max_size=max_size)
    if found is not None:
        return found, "search"
    found = boolean_formula(columns, target)
    if found is not None:
        return found, "boolean"
    if tree:
        found = decision_tree(columns, target, _constants(task))
        if found is not None:
            return found, "tree"
    keys = list(columns)
    rows = np.stack([columns[k] for k in keys], 1)
    table: dict = {}
    for row, t in zip(rows.tolist(), np.asarray(target).tolist(), strict=True):
        key = row[0] if len(keys) == 1 else tuple(row)
        if table.setdefault(key, t) != t:
            raise ValueError(f"{task.name}: contradictory data for {table_name}")
    tables[table_name] = table
    key_expr = keys[0] if len(keys) == 1 else "(" + ", ".join(keys) + ")"
    return f"{table_name}[{key_expr}]", "table"


def program_from_lattice(lattice, task, extrema: bool = False) -> Program:
    """Integer regression of each state update on (previous states, input) and each output on the states.

    `extrema`: the outputs may also read the running minimum and maximum of each state variable
    (start state included), kept as extra variables `lo_i`, `hi_i`: a counter plus "it went below
    zero" (balanced brackets) is a function of the counter and its running minimum, not of the counter.
    """
    z, x, y = lattice.z, lattice.x, lattice.y  # [n, T, r], [n, T, c], [n, T, c_out]
    n, t, r = z.shape
    init = np.asarray(getattr(lattice, "z_init", None) if getattr(lattice, "z_init", None) is not None
                      else np.zeros(r), dtype=np.int64)  # [r] the start state's coordinates
    prev = np.concatenate([np.broadcast_to(init, (n, 1, r)), z[:, :-1]], 1)  # [n, T, r]
    names = [f"z{i}" for i in range(r)]
    inputs = _input_columns(task, x)
    tables: dict = {}
    updates, hows = {}, []
    for i in range(r):
        cols = {**{names[j]: prev[..., j].ravel() for j in range(r)}, **inputs}
        coefs = fit_integer_linear(cols, z[..., i].ravel())
        if coefs is None and len(task.alphabet) <= 20:
            # linear in the states plus any function g(x) of the input (one-hot networks)
            state_cols = {names[j]: prev[..., j].ravel() for j in range(r)}
            onehot = {
                f"__{k}_{v}": (inputs[k] == v).astype(np.int64) for k in inputs for v in task.alphabet[1:]
            }
            coefs = fit_integer_linear({**state_cols, **onehot}, z[..., i].ravel())
            if coefs is not None:
                lin = {k: c for k, c in coefs.items() if k in state_cols}
                g = sum(
                    (c * onehot[k] for k, c in coefs.items() if k.startswith("__")),
                    np.full(n * t, coefs.get("1", 0), np.int64),
                )
                g_expr, how = _regress(inputs, g, task, tables, f"G{i}")
                hows.append(how)
                lin_expr = render_linear(lin) if lin else ""
                updates[names[i]] = f"{lin_expr} + {g_expr}" if lin_expr else g_expr
                continue
        if coefs is not None:
            updates[names[i]] = render_linear(coefs) if coefs else "0"
            hows.append("linear")
            continue
        expr, how = _regress(cols, z[..., i].ravel(), task, tables, f"F{i}", tree=True)
        updates[names[i]], _ = expr, hows.append(how)
    outputs = []
    state = {name: int(v) for name, v in zip(names, init, strict=True)}
    cols = {names[j]: z[..., j].ravel() for j in range(r)}
    if extrema and r:
        with_start = np.concatenate([np.broadcast_to(init, (n, 1, r)), z], 1)  # [n, T + 1, r]
        lo = np.minimum.accumulate(with_start, 1)[:, 1:]  # [n, T, r]: running minimum, start included
        hi = np.maximum.accumulate(with_start, 1)[:, 1:]
        for j in range(r):
            cols[f"lo{j}"], cols[f"hi{j}"] = lo[..., j].ravel(), hi[..., j].ravel()
            state[f"lo{j}"] = state[f"hi{j}"] = int(init[j])
            # simultaneous update: the extrema take the state's new value, i.e. its update expression
            updates[f"lo{j}"] = f"min(lo{j}, {updates[names[j]]})"
            updates[f"hi{j}"] = f"max(hi{j}, {updates[names[j]]})"
        hows.append("extrema")
    for k in range(task.n_outputs):
        if not cols:
            cols = {"x": inputs[next(iter(inputs))]}
        expr, how = _regress(cols, y[..., k].ravel(), task, tables, f"OUT{k}", tree=True)
        outputs.append(expr)
        hows.append(how)
    method = "lattice+" + "/".join(sorted(set(hows)))
    return emit_program(
        task.name,
        method,
        task.n_inputs,
        task.n_outputs,
        state,
        updates,
        outputs,
        tables,
        f"{r} integer state(s).",
    )


def program_from_fsm(fsm, task) -> Program:
    """Regression of the (minimised) machine's transition and output functions over (q, x)."""
    symbols = fsm.symbols
    sym_vals = np.array([[s] if not isinstance(s, tuple) else list(s) for s in symbols])  # [S, c]
    outs = fsm.out
    emitting = [q for q in range(fsm.n_states) if outs[q] is not None]
    label = np.arange(fsm.n_states)
    relabelled = False
    if task.n_outputs == 1 and len({outs[q] for q in emitting}) == len(emitting):
        label = np.array([outs[q][0] if outs[q] is not None else 0 for q in range(fsm.n_states)])
        if outs[fsm.initial] is None:
            label[fsm.initial] = min(label[emitting].min(initial=0), 0) - 1
        relabelled = len(set(label.tolist())) == fsm.n_states
        if not relabelled:
            label = np.arange(fsm.n_states)
    qs, xs = np.meshgrid(np.arange(fsm.n_states), np.arange(len(symbols)), indexing="ij")  # [Q, S]
    cols = {"q": label[qs.ravel()], **_input_columns(task, sym_vals[xs.ravel()][None])}
    target = label[fsm.delta.ravel()]
    tables: dict = {}
    hows = []
    delta_expr, how = _regress(cols, target, task, tables, "DELTA")
    hows.append(how)
    out_exprs = []
    for k in range(task.n_outputs):
        if relabelled:
            out_exprs.append("q")
            continue
        qcol = {"q": label[emitting]}
        expr, how = _regress(qcol, np.array([outs[q][k] for q in emitting]), task, tables, f"OUT{k}")
        out_exprs.append(expr)
        hows.append(how)
    method = f"fsm({fsm.method})+" + "/".join(sorted(set(hows)))
    return emit_program(
        task.name,
        method,
        task.n_inputs,
        task.n_outputs,
        {"q": int(label[fsm.initial])},
        {"q": delta_expr},
        out_exprs,
        tables,
        f"{fsm.n_states} states.",
    )
