"""Small if-else expressions over comparisons, for outputs of unbounded integer states (Michaud et al. 2024, Sec. 3.4).

A lookup table keyed on integer states only covers the states seen in the data: Majority_0_2 reads
its answer off the counts z0 = n0 - n2, z1 = n1 - n2, which grow without bound, so a table fails on
the first longer sequence (a KeyError). The bottom-up search of `synthesis.search_expression` would
need size 13 for `int(min(z0, z0 - z1) < 0) * (1 + int(z1 < 0))`, beyond its reach; a depth-2
decision tree over comparisons, `((1 if z0 < z1 else 0) if 0 <= z0 else (2 if z1 < 0 else 1))`,
is small and, being made of comparisons, holds for states of any size.

`decision_tree` finds the first tree of depth 1, else 2, else 3, whose every leaf (a column, a
constant, or a sum or difference of two columns) is right on all its rows. Predicates are `a < b`
and `a == b` over the same operands. Depths 1-2 are searched exhaustively and vectorised: a side of
a split is solvable when some leaf is right on all its rows, a matrix product away. Depth 3 (the
arg-max of four counts, Majority_0_3, is a three-round tournament) tries only the predicates that
best separate the outputs (lowest conditional entropy) at the top two levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = ["decision_tree"]


def _operands(columns: dict[str, np.ndarray], constants: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """Columns, constants, then sums and differences of two columns, as (expr, values [rows])."""
    ops = [(k, v) for k, v in columns.items()]
    ops += [(str(c), np.full(len(next(iter(columns.values()))), c, np.int64)) for c in dict.fromkeys(constants)]
    for (ka, va), (kb, vb) in combinations(columns.items(), 2):
        ops += [(f"({ka} + {kb})", va + vb), (f"({ka} - {kb})", va - vb), (f"({kb} - {ka})", vb - va)]
    return ops


def _predicates(operands: list[tuple[str, np.ndarray]], names: set[str]) -> list[tuple[str, np.ndarray]]:
    """`a < b` and `a == b` for operand pairs that read at least one column; one of each p / not-p pair."""
    seen: set[bytes] = set()
    out = []
    for (ea, va), (eb, vb) in ((a, b) for a in operands for b in operands if a[0] != b[0]):
        if not any(n in ea or n in eb for n in names):
            continue
        for op, val in (("<", va < vb), ("==", va == vb)):
            if op == "==" and ea > eb:
                continue  # symmetric
            if val.all() or not val.any():
                continue  # splits nothing
            key, neg = val.tobytes(), (~val).tobytes()
            if key in seen or neg in seen:
                continue
            seen.add(key)
            out.append((f"{ea} {op} {eb}", val))
    return out


def decision_tree(
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    constants: Sequence[int] = (0, 1, 2),
    max_depth: int = 3,
    max_rows: int = 3000,
    beam: int = 12,
) -> str | None:
    """`(A if P else B)`, nested up to `max_depth` (at most 3), equal to `target` on every row of `columns`; or None.

    Leaves are columns, constants, or sums/differences of two columns; predicates compare two of those.
    None when there are more than `max_rows` distinct rows (the search would be slow) or no tree fits.
    """
    target = np.asarray(target, dtype=np.int64)
    names = list(columns)
    if not names:
        return None
    table = np.unique(np.stack([*(np.asarray(columns[k], np.int64) for k in names), target], 1), axis=0)
    if len(table) > max_rows:
        return None
    cols = {k: table[:, i] for i, k in enumerate(names)}
    tgt = table[:, -1]
    leaves = _operands(cols, constants)  # [(expr, [rows])]
    right = np.stack([v == tgt for _, v in leaves])  # [n_leaf, rows]: leaf l is right on row i
    wrong = (~right).astype(np.float64)  # [n_leaf, rows]
    if right.all(1).any():
        return None  # no split needed: the plain regressions handle a single expression
    preds = _predicates(leaves, set(names))
    if not preds:
        return None
    pmat = np.stack([v for _, v in preds])  # [n_pred, rows] bool

    def leaf_for(mask: np.ndarray) -> str | None:
        ok = np.flatnonzero(~(right[:, mask] == 0).any(1)) if mask.any() else np.array([0])
        return leaves[ok[0]][0] if len(ok) else None

    def split_for(mask: np.ndarray) -> str | None:
        # every predicate at once: bad[p, l] > 0 when leaf l is wrong somewhere on mask & p (or mask & ~p)
        inside = (pmat & mask).astype(np.float64)  # [n_pred, rows]
        outside = (~pmat & mask).astype(np.float64)
        good_in = (inside @ wrong.T) == 0  # [n_pred, n_leaf]
        good_out = (outside @ wrong.T) == 0
        both = np.flatnonzero(good_in.any(1) & good_out.any(1))
        if not len(both):
            return None
        p = both[0]
        a, b = leaves[np.flatnonzero(good_in[p])[0]][0], leaves[np.flatnonzero(good_out[p])[0]][0]
        return f"({a} if {preds[p][0]} else {b})"

    def depth2_for(mask: np.ndarray, roots: list[int]) -> str | None:
        found = leaf_for(mask) or split_for(mask)
        if found is not None:
            return found
        for p in roots:
            sides = []
            for side_mask in (pmat[p] & mask, ~pmat[p] & mask):
                side = leaf_for(side_mask) or split_for(side_mask)
                if side is None:
                    break
                sides.append(side)
            if len(sides) == 2:
                return f"({sides[0]} if {preds[p][0]} else {sides[1]})"
        return None

    everything = np.ones(len(tgt), dtype=bool)
    found = split_for(everything)
    if found is not None or max_depth < 2:
        return found
    found = depth2_for(everything, list(range(len(preds))))
    if found is not None or max_depth < 3:
        return found
    # depth 3 (an arg-max of four counts is a three-round tournament): exhaustive would be
    # n_pred^2 splits per root, so only the `beam` roots that best separate the outputs are tried
    order = _by_purity(pmat, tgt)[:beam]
    for p in order:
        sides = []
        for mask in (pmat[p], ~pmat[p]):
            side = depth2_for(mask, list(_by_purity(pmat, tgt, mask)[:beam]))
            if side is None:
                break
            sides.append(side)
        if len(sides) == 2:
            return f"({sides[0]} if {preds[p][0]} else {sides[1]})"
    return None


def _by_purity(pmat: np.ndarray, tgt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Predicate indices by the conditional entropy of the target on their two sides (within `mask`), best first."""
    mask = np.ones(pmat.shape[1], dtype=bool) if mask is None else mask
    labels = np.unique(tgt[mask])
    onehot = (tgt[:, None] == labels[None]) & mask[:, None]  # [rows, n_labels]
    score = np.zeros(len(pmat))
    for side in (pmat, ~pmat):
        counts = side.astype(np.float64) @ onehot.astype(np.float64)  # [n_pred, n_labels]
        total = counts.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(total > 0, counts / np.maximum(total, 1), 0.0)
            ent = -(frac * np.log(np.where(frac > 0, frac, 1.0))).sum(1)
        score += total[:, 0] * ent
    useful = (pmat & mask).any(1) & (~pmat & mask).any(1)
    score[~useful] = np.inf
    return np.argsort(score, kind="stable")[: int(useful.sum())]
