"""Integer states of a linear RNN: an exact change of basis onto a lattice (Michaud et al. 2024, Sec. 3.3).

For h_t = W h_{t-1} + U x_t + b with h_0 = 0, every state lies in the Krylov space spanned by
W^k U and W^k b. In the Krylov basis (greedily chosen columns) W acts by an integer companion-like
matrix whenever the task is an integer recurrence, so the coordinates are integers; an "integer
autoencoder" then rescales each coordinate by the spacing of its values (a 1-D lattice per axis)
and checks every state lands on the lattice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.analysis.mips.training import TrainedRNN, predict

__all__ = ["Lattice", "LatticeError", "integer_lattice", "krylov_basis"]


class LatticeError(ValueError):
    """The hidden states do not lie on an integer lattice (the message says how far off they are)."""


@dataclass
class Lattice:
    """Integer coordinates `z = basis^+ h` of the hidden states, with data to regress on."""

    basis: np.ndarray  # [d_hidden, r]: lattice vectors in hidden space
    z: np.ndarray  # [batch, pos, r] integer states after each step
    x: np.ndarray  # [batch, pos, n_inputs] integer inputs
    y: np.ndarray  # [batch, pos, n_outputs] the network's outputs
    max_error: float  # largest distance of a coordinate to its integer

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


def _spacing(values: np.ndarray, max_den: int = 12) -> float:
    """Spacing s with values / s integer (approximate gcd of the values, denominators up to max_den)."""
    mags = np.abs(values[np.abs(values) > 1e-6 * max(np.abs(values).max(initial=0), 1e-12)])
    if not len(mags):
        return 1.0
    m = mags.min()
    ratios = np.unique(np.round(mags / m, 6))
    for den in range(1, max_den + 1):
        r = ratios * den
        if np.abs(r - np.round(r)).max() < 0.01 * den:
            return m / den
    return m


def integer_lattice(trained: TrainedRNN, n_seqs: int = 500, tol: float = 0.15, seed: int = 11) -> Lattice:
    """Integer states of a trained linear RNN via the Krylov basis and integer snapping (raises `LatticeError`).

    In the basis C: W' = C^+ W C, U' = C^+ U, b' = C^+ b are snapped to integers (each within `tol`),
    the integer recurrence z_t = W' z_{t-1} + U' x_t + b' is run, and the network's readout of C z_t
    must reproduce the network's own outputs on every sequence (the reparametrisation is exact).
    """
    model = trained.model
    if model.spec.family != "linear":
        raise LatticeError(f"the lattice needs a linear recurrence, this one is {model.spec.family!r}")
    w = model.W.detach().numpy()  # [d, d]
    u = (model.U / model.x_scale).detach().numpy()  # [d, d_in]: acts on raw features
    b = model.b.detach().numpy()[:, None]  # [d, 1]
    gens = np.concatenate([u, b], 1) if model.spec.bias else u
    basis = krylov_basis(w, gens)
    x, _ = trained.task.generate(n_seqs, seed=seed)  # [n, T, c]
    feats = trained.features(x).numpy()  # [n, T, d_in]
    y_net = predict(trained, x)
    r = basis.shape[1]
    pinv = np.linalg.pinv(basis)  # [r, d]
    w_, u_, b_ = pinv @ w @ basis, pinv @ u, (pinv @ b)[:, 0]  # [r, r], [r, d_in], [r]
    snap = [np.round(a) for a in (w_, u_, b_)]
    err = max(float(np.abs(a - s).max(initial=0.0)) for a, s in zip((w_, u_, b_), snap, strict=True))
    if err > tol:
        raise LatticeError(
            f"{trained.task.name}: the Krylov-basis weights are up to {err:.3f} from integers "
            f"(tolerance {tol})"
        )
    w_i, u_i, b_i = (a.astype(np.int64) for a in snap)
    if not model.spec.bias:
        b_i = np.zeros(r, dtype=np.int64)
    z = np.zeros((*feats.shape[:2], r), dtype=np.int64)  # [n, T, r]
    prev = np.zeros((feats.shape[0], r), dtype=np.int64)
    feats_i = np.round(feats).astype(np.int64)
    for t in range(feats.shape[1]):
        prev = prev @ w_i.T + feats_i[:, t] @ u_i.T + b_i
        z[:, t] = prev
    import torch

    from workbench.analysis.mips.training import _decode

    with torch.no_grad():
        h = torch.as_tensor(z.astype(np.float64) @ basis.T)  # [n, T, d]
        y_int = _decode(model.readout(h) * model.y_scale, trained.classes, trained.task.n_outputs)
    wrong = float((y_int != y_net).any(axis=2).mean())
    if wrong:
        raise LatticeError(
            f"{trained.task.name}: the integer-snapped network disagrees with the trained one on "
            f"{wrong:.1%} of steps"
        )
    return Lattice(basis, z, x, y_net, err)
