"""Hidden states -> a finite state machine over all time steps, minimised (Michaud et al. 2024, Sec. 3.3).

A Moore machine: `q_t = delta[q_{t-1}, x_t]`, `y_t = out[q_t]`, `q_0 = initial`. Hidden states are
grouped (`clustering.py`), transitions are counted over every time step of every sequence, the
contradictory ones (one group and symbol, several next groups) are counted and reported, and the
machine is minimised by Moore's partition refinement.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FSM", "fsm_from_labels", "minimize", "planted_fsm_run", "symbols_of"]


@dataclass
class FSM:
    """A Moore machine over `symbols`; `out[q]` is `None` for a state that emits nothing (only the start)."""

    n_states: int
    initial: int
    delta: np.ndarray  # [n_states, n_symbols] next state
    out: list[tuple[int, ...] | None]  # per state
    symbols: list  # input symbols, ints or tuples, in column order of delta
    contradictions: int = 0  # (state, symbol) pairs seen going to several states, states seen with several outputs
    unobserved: int = 0  # (state, symbol) pairs never seen, filled by the network or a self-loop
    method: str = ""
    labels: np.ndarray | None = field(default=None, repr=False)  # [batch, pos] state of each hidden state
    # of the `observations` (transitions and outputs seen in the data), how many disagree with the
    # majority the machine keeps: the size of what the contradictions overrule
    outvoted: int = 0
    observations: int = 0

    def describe_contradictions(self) -> str:
        """One sentence: how many contradictions, and how much of the data they overrule."""
        if not self.contradictions:
            return "no contradictions: every (state, symbol) pair and every state's output was seen one way"
        share = self.outvoted / self.observations if self.observations else float("nan")
        return (
            f"{self.contradictions} contradiction(s): {self.outvoted:,} of {self.observations:,} observed transitions "
            f"and outputs ({share:.3%}) disagree with the majority, which the machine keeps; hidden states that "
            "the clustering put in the wrong state look like this"
        )

    def run(self, xs: list) -> list:
        """Outputs of the machine on one input sequence (ints for one output channel)."""
        index = {s: i for i, s in enumerate(self.symbols)}
        q, ys = self.initial, []
        for x in xs:
            q = int(self.delta[q, index[x]])
            o = self.out[q]
            ys.append(None if o is None else (o[0] if len(o) == 1 else o))
        return ys

    def edges(self) -> list[tuple[int, int, object]]:
        """(from, to, symbol) for every transition."""
        return [
            (q, int(self.delta[q, a]), s) for q in range(self.n_states) for a, s in enumerate(self.symbols)
        ]


def symbols_of(task) -> list:
    """Input symbols of a task: ints for one channel, tuples (channel-major product) for several."""
    if task.n_inputs == 1:
        return list(task.alphabet)
    return list(itertools.product(task.alphabet, repeat=task.n_inputs))


def symbol_index(task, x: np.ndarray) -> np.ndarray:
    """Integer inputs `[batch, pos, n_inputs]` -> symbol indices `[batch, pos]` (mixed radix over channels)."""
    alpha = np.asarray(task.alphabet)
    idx = np.searchsorted(alpha, x)  # [b, p, c]
    out = np.zeros(x.shape[:2], dtype=np.int64)
    for c in range(x.shape[2]):
        out = out * len(alpha) + idx[..., c]
    return out


def fsm_from_labels(
    labels: np.ndarray,
    initial_label: int,
    sym: np.ndarray,
    y: np.ndarray,
    symbols: list,
    fill=None,
    method: str = "",
) -> FSM:
    """Build a Moore machine from state labels and symbols `[batch, pos]`, a start label, outputs `[batch, pos, c]`."""
    n = int(max(labels.max(), initial_label)) + 1
    prev = np.concatenate([np.full((labels.shape[0], 1), initial_label), labels[:, :-1]], axis=1)  # [b, p]
    counts: dict[tuple[int, int], dict[int, int]] = {}
    for q, a, q2 in zip(prev.ravel(), sym.ravel(), labels.ravel(), strict=True):
        d = counts.setdefault((int(q), int(a)), {})
        d[int(q2)] = d.get(int(q2), 0) + 1
    delta = np.zeros((n, len(symbols)), dtype=np.int64)
    contradictions = unobserved = outvoted = observations = 0
    for q in range(n):
        for a in range(len(symbols)):
            d = counts.get((q, a))
            if d:
                delta[q, a] = max(d, key=d.get)
                contradictions += len(d) > 1
                observations += sum(d.values())
                outvoted += sum(d.values()) - max(d.values())
            else:
                filled = fill(q, a) if fill is not None else None
                delta[q, a] = q if filled is None else filled
                unobserved += 1
    outs: list[tuple[int, ...] | None] = [None] * n
    flat_y = y.reshape(-1, y.shape[-1])
    for q in range(n):
        rows = flat_y[labels.ravel() == q]
        if len(rows):
            values, freq = np.unique(rows, axis=0, return_counts=True)
            outs[q] = tuple(int(v) for v in values[freq.argmax()])
            contradictions += len(values) > 1
            observations += int(freq.sum())
            outvoted += int(freq.sum() - freq.max())
    return FSM(n, int(initial_label), delta, outs, list(symbols), contradictions, unobserved, method, labels,
               outvoted, observations)


def minimize(fsm: FSM) -> FSM:
    """Moore's partition refinement on reachable states; a silent start state joins an equivalent state if any."""
    reach, stack = {fsm.initial}, [fsm.initial]
    while stack:
        q = stack.pop()
        for q2 in fsm.delta[q]:
            if int(q2) not in reach:
                reach.add(int(q2))
                stack.append(int(q2))
    states = sorted(reach)
    block = {q: fsm.out[q] for q in states}  # initial partition by output
    while True:
        sig = {q: (block[q], tuple(block[int(q2)] for q2 in fsm.delta[q])) for q in states}
        ids: dict = {}
        new = {q: ids.setdefault(sig[q], len(ids)) for q in states}
        if len(set(new.values())) == len(set(map(repr, block.values()))):
            block = new
            break
        block = new
    # a start state that emits nothing merges with a state whose transitions it shares
    start = block[fsm.initial]
    if fsm.out[fsm.initial] is None and list(block.values()).count(start) == 1:
        for q in states:
            if q != fsm.initial and all(
                block[int(a)] == block[int(b)]
                for a, b in zip(fsm.delta[q], fsm.delta[fsm.initial], strict=True)
            ):
                block = {s: (block[q] if b == start else b) for s, b in block.items()}
                break
    # canonical numbering: breadth first from the start, symbols in order
    order, seen = [], {}
    queue = [block[fsm.initial]]
    rep = {}
    for q in states:
        rep.setdefault(block[q], q)
    while queue:
        b = queue.pop(0)
        if b in seen:
            continue
        seen[b] = len(order)
        order.append(b)
        queue.extend(block[int(q2)] for q2 in fsm.delta[rep[b]])
    n = len(order)
    delta = np.array([[seen[block[int(q2)]] for q2 in fsm.delta[rep[b]]] for b in order], dtype=np.int64)
    outs = []
    for b in order:
        members = [q for q in states if block[q] == b and fsm.out[q] is not None]
        outs.append(fsm.out[members[0]] if members else None)
    labels = None
    if fsm.labels is not None:
        lookup = np.array([seen.get(block.get(q, -1), -1) for q in range(fsm.n_states)])
        labels = lookup[fsm.labels]
    return FSM(
        n,
        seen[block[fsm.initial]],
        delta,
        outs,
        fsm.symbols,
        fsm.contradictions,
        fsm.unobserved,
        fsm.method,
        labels,
        fsm.outvoted,
        fsm.observations,
    )


def planted_fsm_run(delta: np.ndarray, out: list, initial: int, sym: np.ndarray) -> np.ndarray:
    """States `[batch, pos]` of a planted machine on symbol indices `[batch, pos]` (for tests)."""
    states = np.zeros_like(sym)
    for b in range(sym.shape[0]):
        q = initial
        for t in range(sym.shape[1]):
            q = int(delta[q, sym[b, t]])
            states[b, t] = q
    return states
