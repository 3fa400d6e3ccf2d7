"""Integer states of a linear RNN: an exact change of basis onto a lattice (Michaud et al. 2024, Sec. 3.3).

For h_t = W h_{t-1} + U x_t + b with h_0 = 0, every state lies in the reachable (Krylov) space
spanned by W^k U and W^k b. Two bases of that space are tried, each truncated smallest rank first:

- observability rows (linear readout only) of the affine system with the biases folded in,
  h^ = [h, 1], W^ = [[W, b], [0, 1]], V^ = [V, c]: coordinate k is "what the network would output
  k steps ahead with zero input", so an exact network on an integer task has integer coordinates
  (the start state's included), and modes the readout cannot see (training left-overs) drop out;
- Krylov columns U, b, W U, W b, ...: coordinate = integer coefficient of each generator.

When the trained weights are only approximately integral (a Jordan block split into two nearby
eigenvalues, say), the readout's impulse responses still are: `markov_lattice` rounds the Markov
parameters V^ W^^k [U^, h^_0] (k < the training length) to integers, finds the shortest integer
linear recurrence they obey, and realises it in observer form (coordinate j = the output j steps
ahead with zero input), an exact integer system that must reproduce the network's outputs.

An "integer autoencoder" then rescales each coordinate by its spacing (1, 1/2, ..., 1/12: a 1-D
lattice per axis), checks every state lands on the lattice (h_0 = 0 on the origin), and checks the
recurrence closes: each integer coordinate is an integer-linear function of the previous ones and
the input (raw, or its one-hot indicators). A candidate failing any check is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.analysis.mips.training import TrainedRNN, _decode, predict

__all__ = [
    "Lattice",
    "LatticeError",
    "integer_lattice",
    "krylov_basis",
    "lattice_candidates",
    "markov_lattice",
    "observability_rows",
]


class LatticeError(ValueError):
    """The hidden states do not lie on an integer lattice (the message says how far off they are)."""


@dataclass
class Lattice:
    """Integer coordinates `z = encoder h` of the hidden states, with data to regress on."""

    basis: np.ndarray  # [d_hidden, r]: lattice vectors in hidden space (h ~ basis z)
    z: np.ndarray  # [batch, pos, r] integer states after each step
    x: np.ndarray  # [batch, pos, n_inputs] integer inputs
    y: np.ndarray  # [batch, pos, n_outputs] the network's outputs
    max_error: float  # largest distance of a scaled coordinate to its integer
    kind: str = "krylov"  # which basis: observability | krylov
    z_init: np.ndarray | None = None  # [r] integer coordinates of the start state (zeros when None)

    @property
    def rank(self) -> int:
        """Number of integer state variables."""
        return self.basis.shape[1]


def krylov_basis(w: np.ndarray, gens: np.ndarray, rtol: float = 2e-3) -> np.ndarray:
    """Greedy independent columns of [G, W G, W^2 G, ...] (G = generators [d, m]): [d, r]."""
    d = w.shape[0]
    scale = max(np.linalg.norm(gens, axis=0).max(initial=0.0), 1e-12)
    chosen, q = [], np.zeros((d, 0))
    block = gens
    for _ in range(d):
        for col in block.T:
            r = col - q @ (q.T @ col)
            if np.linalg.norm(r) > rtol * scale and len(chosen) < d:
                chosen.append(col)
                q = np.concatenate([q, (r / np.linalg.norm(r))[:, None]], 1)
        block = w @ block
    return np.stack(chosen, 1) if chosen else np.zeros((d, 0))


def observability_rows(w: np.ndarray, v: np.ndarray, reach: np.ndarray, rtol: float = 1e-3) -> np.ndarray:
    """Greedy independent rows of [V; V W; V W^2; ...] as seen on the reachable space `reach` [d, k]: [r, d]."""
    d = w.shape[0]
    q_basis, _ = np.linalg.qr(reach) if reach.shape[1] else (np.zeros((d, 0)), None)  # [d, k]
    scale = max(np.linalg.norm(v @ q_basis, axis=1).max(initial=0.0), 1e-12)
    chosen, q = [], np.zeros((q_basis.shape[1], 0))
    block = v  # [c_out, d]
    for _ in range(d):
        for row in block:
            seen = q_basis.T @ row  # the row restricted to reachable states, [k]
            r = seen - q @ (q.T @ seen)
            if np.linalg.norm(r) > rtol * scale and len(chosen) < q_basis.shape[1]:
                chosen.append(row)
                q = np.concatenate([q, (r / np.linalg.norm(r))[:, None]], 1)
        block = block @ w
    return np.stack(chosen) if chosen else np.zeros((0, d))


def _snap_axes(coords: np.ndarray, tol: float, max_den: int = 12) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-axis spacing 1/k (k <= max_den) putting every coordinate on integers: (z int [N, r], k [r], error)."""
    ks, zs, worst = [], [], 0.0
    for axis in coords.T:
        for k in range(1, max_den + 1):
            err = float(np.abs(axis * k - np.round(axis * k)).max(initial=0.0))
            if err < tol:
                break
        else:
            raise LatticeError(f"a coordinate is up to {err:.3f} from any lattice of spacing 1/k, k <= {max_den}")
        ks.append(k)
        zs.append(np.round(axis * k).astype(np.int64))
        worst = max(worst, err)
    return np.stack(zs, 1), np.array(ks, dtype=np.float64), worst


def _closes(
    z: np.ndarray, z_init: np.ndarray, inputs: dict[str, np.ndarray], onehot: dict[str, np.ndarray]
) -> bool:
    """Every coordinate is an integer-linear function of the previous coordinates and the input (or one-hot)."""
    from workbench.analysis.mips.synthesis import fit_integer_linear

    n, t, r = z.shape
    prev = np.concatenate([np.broadcast_to(z_init, (n, 1, r)), z[:, :-1]], 1)  # [n, T, r]
    state = {f"z{j}": prev[..., j].ravel() for j in range(r)}
    for i in range(r):
        target = z[..., i].ravel()
        if fit_integer_linear({**state, **inputs}, target) is None and (
            not onehot or fit_integer_linear({**state, **onehot}, target) is None
        ):
            return False
    return True


def lattice_candidates(
    trained: TrainedRNN,
    n_seqs: int = 500,
    tol: float = 0.2,
    seed: int = 11,
    max_candidates: int = 4,
    state_only: bool = False,
) -> list[Lattice]:
    """Integer-state readings of a trained linear RNN, smallest rank first (observability basis before Krylov).

    `state_only`: the net's readout is not exact, so only its recurrent state is read (Krylov basis:
    the states must snap and the snapped states must give the net's own outputs) and the lattice's
    outputs `y` are the task's, for the readout to be synthesised from them.
    """
    model = trained.model
    if model.spec.family != "linear":
        raise LatticeError(f"the lattice needs a linear recurrence, this one is {model.spec.family!r}")
    task = trained.task
    w = model.W.detach().numpy()  # [d, d]
    u = (model.U / model.x_scale).detach().numpy()  # [d, d_in]: acts on raw features
    b = model.b.detach().numpy()[:, None]  # [d, 1]
    gens = np.concatenate([u, b], 1) if model.spec.bias else u
    reach = krylov_basis(w, gens)  # [d, k]
    x, y_task = task.generate(n_seqs, seed=seed)  # [n, T, c], [n, T, c_out]: held out from training
    feats = trained.features(x)
    h = model.hidden_states(feats).numpy()  # [n, T, d]
    y_net = predict(trained, x)
    inputs = {f"x{c}": x[..., c].ravel() for c in range(task.n_inputs)}
    onehot = (
        {f"x{c}_{v}": (x[..., c].ravel() == v).astype(np.int64) for c in range(task.n_inputs) for v in task.alphabet}
        if len(task.alphabet) <= 20
        else {}
    )
    encoders: list[tuple[str, np.ndarray]] = []  # (kind, rows [r, d + 1]) with z = rows [h, 1]
    if model.spec.readout == "linear" and not state_only:
        d = w.shape[0]
        w_aff = np.block([[w, b], [np.zeros((1, d)), np.ones((1, 1))]])  # [d+1, d+1]
        start = np.zeros((d + 1, 1))
        start[d] = 1.0
        reach_aff = krylov_basis(w_aff, np.concatenate([np.vstack([u, np.zeros((1, u.shape[1]))]), start], 1))
        v = model.readout.weight.detach().numpy() * float(model.y_scale)  # [c_out, d]
        c = model.readout.bias.detach().numpy()[:, None] * float(model.y_scale)  # [c_out, 1]
        obs = observability_rows(w_aff, np.concatenate([v, c], 1), reach_aff)
        encoders += [("observability", obs[:r]) for r in range(1, obs.shape[0] + 1)]
    if reach.shape[1]:
        encoders.append(("krylov", np.concatenate([np.linalg.pinv(reach), np.zeros((reach.shape[1], 1))], 1)))
    h_aff = np.concatenate([h.reshape(-1, h.shape[-1]), np.ones((h.shape[0] * h.shape[1], 1))], 1)  # [N, d+1]
    h0_aff = np.zeros((1, h.shape[-1] + 1))
    h0_aff[0, -1] = 1.0
    found, reasons = [], []
    if model.spec.readout == "linear" and not state_only:
        for minimal in (True, False):
            try:
                found.append(markov_lattice(trained, n_seqs=n_seqs, seed=seed, minimal=minimal))
                break
            except LatticeError as exc:
                reasons.append(f"markov: {exc}")
    for kind, rows in encoders:
        try:
            z_all, ks, err = _snap_axes(np.concatenate([h0_aff, h_aff]) @ rows.T, tol)
        except LatticeError as exc:
            reasons.append(f"{kind}-{rows.shape[0]}: {exc}")
            continue
        z_init, z = z_all[0], z_all[1:].reshape(*h.shape[:2], -1)  # [r], [n, T, r]
        if not _closes(z, z_init, inputs, onehot):
            reasons.append(f"{kind}-{rows.shape[0]}: the integer recurrence does not close")
            continue
        encoder = rows[:, :-1] * ks[:, None]  # [r, d]: the linear part (the start state carries the offset)
        basis = np.linalg.pinv(encoder)  # [d, r]
        if kind == "krylov" and not _reproduces(trained, z, basis, y_net):
            reasons.append(f"{kind}-{rows.shape[0]}: the snapped states change the outputs")
            continue
        found.append(Lattice(basis, z, x, y_task if state_only else y_net, err, kind, z_init))
        if len(found) >= max_candidates:
            break
    found.sort(key=lambda lat: lat.rank)  # smallest description first (stable: markov before others)
    if not found:
        raise LatticeError(f"{task.name}: no integer lattice ({'; '.join(reasons)[:240]})")
    return found


def _shortest_integer_recurrence(seq: np.ndarray, max_order: int) -> np.ndarray | None:
    """Integer a [n] with seq[k] = sum_i a_i seq[k - 1 - i] for every k >= n (seq [K, m]), smallest n; or None."""
    k_len = seq.shape[0]
    for n in range(0, max_order + 1):
        if k_len - n < n + 1:
            break
        rows = [np.concatenate([seq[k - 1 - i] for i in range(n)]) if n else np.zeros(0) for k in range(n, k_len)]
        # each equation is one (k, entry) pair: seq[k, e] = sum_i a_i seq[k-1-i, e]
        a_mat = np.array([[seq[k - 1 - i, e] for i in range(n)] for k in range(n, k_len) for e in range(seq.shape[1])])
        rhs = np.array([seq[k, e] for k in range(n, k_len) for e in range(seq.shape[1])], dtype=np.float64)
        del rows
        if n == 0:
            if not rhs.any():
                return np.zeros(0, dtype=np.int64)
            continue
        coef, *_ = np.linalg.lstsq(a_mat.astype(np.float64), rhs, rcond=None)
        a = np.round(coef).astype(np.int64)
        if np.array_equal(a_mat.astype(np.int64) @ a, rhs.astype(np.int64)):
            return a
    return None


def markov_lattice(
    trained: TrainedRNN,
    n_seqs: int = 500,
    seed: int = 11,
    tol: float = 0.35,
    minimal: bool = True,
    edge: float = 0.75,
) -> Lattice:
    """Observer-form integer realisation of a linear-readout net's rounded Markov parameters (raises `LatticeError`).

    The realisation must give the net's rounded outputs, except where the net's real-valued output
    is within `edge` of the realisation's (a near-tie at the rounding boundary, see `_check_agreement`).
    """
    model, task = trained.model, trained.task
    if model.spec.family != "linear" or model.spec.readout != "linear":
        raise LatticeError("Markov parameters need a linear recurrence with a linear readout")
    w = model.W.detach().numpy()
    u = (model.U / model.x_scale).detach().numpy()  # [d, d_in]
    b = model.b.detach().numpy()[:, None]
    d = w.shape[0]
    v = model.readout.weight.detach().numpy() * float(model.y_scale)  # [c, d]
    c = model.readout.bias.detach().numpy() * float(model.y_scale)  # [c]
    k_len = task.seq_len
    # M_k = V W^k U (input responses), m_k = output k steps after the start with zero input
    markov, free, wk, state = [], [], np.eye(d), np.zeros(d)
    for _ in range(k_len + 1):
        free.append(v @ state + c)  # [c]
        markov.append(v @ wk @ u)  # [c, d_in]
        state = w @ state + b[:, 0]
        wk = w @ wk
    # minimal: state z_j = the output j steps ahead (j < n), z_0 the output now; this reads the
    # never-emitted "output" of the start state, free_0 = c, which must then be an integer too.
    # Otherwise one more variable: z_0 = the output now and s_j = the output j + 1 steps ahead.
    first = 0 if minimal else 1
    markov_arr = np.array(markov[:k_len])  # [K, c, d_in]: M_0 .. M_{K-1}
    free_arr = np.array(free[first : first + k_len])  # [K, c]: zero-input outputs
    err = max(np.abs(markov_arr - np.round(markov_arr)).max(), np.abs(free_arr - np.round(free_arr)).max())
    if err > tol:
        raise LatticeError(f"{task.name}: Markov parameters up to {err:.3f} from integers")
    m_int = np.round(markov_arr).astype(np.int64)
    f_int = np.round(free_arr).astype(np.int64)
    stacked = np.concatenate([m_int.reshape(k_len, -1), f_int], 1)  # [K, c*d_in + c]: row k = (M_k, free_{k+first})
    a = _shortest_integer_recurrence(stacked, max_order=min(8, (k_len - 1) // 2))
    if a is None:
        raise LatticeError(f"{task.name}: the rounded Markov parameters obey no short integer recurrence")
    n, n_out = max(len(a), 1 - first), task.n_outputs
    a = np.concatenate([a, np.zeros(n - len(a), np.int64)])
    # s_j(t) = s_{j+1}(t-1) + M_{j+first} x_t, the one beyond the last from the recurrence; z_0 = s_0(t-1) + M_0 x
    x, _ = task.generate(n_seqs, seed=seed)
    feats = np.round(trained.features(x).numpy()).astype(np.int64)  # [b, T, d_in]
    s_init = f_int[:n].T.copy()  # [c, n]
    z_init = np.concatenate([np.zeros((n_out, first), np.int64), s_init], 1)  # [c, first + n]
    zs, s_prev = [], np.broadcast_to(s_init, (x.shape[0], n_out, n)).copy()  # [b, c, n]
    for t in range(x.shape[1]):
        beyond = (s_prev[..., ::-1] * a).sum(-1)  # [b, c]: the next response past the last one kept
        if first:
            drive = np.einsum("jci,bi->bcj", m_int[: n + 1], feats[:, t])  # [b, c, n + 1]
            ahead = np.concatenate([s_prev, beyond[..., None]], -1) + drive  # z_0, s_0 .. s_{n-1}
            s_prev = ahead[..., 1:]
        else:
            drive = np.einsum("jci,bi->bcj", m_int[:n], feats[:, t])  # [b, c, n]
            ahead = np.concatenate([s_prev[..., 1:], beyond[..., None]], -1) + drive  # z_0 .. z_{n-1}
            s_prev = ahead
        zs.append(ahead.reshape(x.shape[0], -1))
    z = np.stack(zs, 1)  # [b, T, c * (first + n)]
    y_int = z.reshape(*z.shape[:2], n_out, first + n)[..., 0]  # [b, T, c]: the realisation's outputs
    _check_agreement(trained, x, y_int, edge)
    basis = np.zeros((d, z.shape[-1]))
    return Lattice(basis, z, x, y_int, float(err), "markov", z_init.reshape(-1))


def _check_agreement(trained: TrainedRNN, x: np.ndarray, y_int: np.ndarray, edge: float) -> None:
    """The integer realisation's outputs `y_int` [b, T, c] must be the net's, up to the net's rounding edge.

    A net that is exact on its held-out set can still sit near a rounding boundary on a rare large
    input (its Markov parameters are 1.0015, say, not 1, so an output of 330 comes out as 330.5):
    there the rounded net and its integer realisation differ by one. Such a position is accepted when
    the net's real-valued output is within `edge` (< 1) of the realisation's, i.e. the net hesitates
    between the realisation's value and a neighbour; any larger gap, or any cross-entropy net that
    disagrees, rejects the realisation. The program is then verified against the task as always.
    """
    task = trained.task
    y_net = predict(trained, x)  # [b, T, c]
    if np.array_equal(y_int, y_net):
        return
    if trained.classes is None:
        with torch.no_grad():
            raw = trained.model(trained.features(x)).numpy()  # [b, T, c]
        gap = np.abs(raw - y_int)[y_int != y_net]
        if gap.max() < edge:
            return
        detail = f" (the net's output is up to {gap.max():.2f} away)"
    else:
        detail = ""
    raise LatticeError(
        f"{task.name}: the integer realisation of the Markov parameters disagrees with the net{detail}"
    )


def _reproduces(trained: TrainedRNN, z: np.ndarray, basis: np.ndarray, y_net: np.ndarray) -> bool:
    """The readout of the snapped states `basis z` gives the network's own outputs on every step."""
    model = trained.model
    with torch.no_grad():
        hz = torch.as_tensor(z.astype(np.float64) @ basis.T)  # [n, T, d]
        y_int = _decode(model.read(hz), trained.classes, trained.task.n_outputs)
    return bool((y_int == y_net).all())


def integer_lattice(trained: TrainedRNN, n_seqs: int = 500, tol: float = 0.2, seed: int = 11) -> Lattice:
    """The smallest integer-state reading of a trained linear RNN (raises `LatticeError` when there is none)."""
    return lattice_candidates(trained, n_seqs=n_seqs, tol=tol, seed=seed, max_candidates=1)[0]
