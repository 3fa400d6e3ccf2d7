"""Simplify a trained RNN without losing exactness (Michaud et al. 2024, Sec. 3.2).

L1 pruning, integer snapping, and exact reparametrisations of a linear recurrence: any invertible P
maps h -> P^-1 h with W' = P^-1 W P, U' = P^-1 U, b' = P^-1 b and the readout's first layer V' = V P,
and the network computes the same function. Whitening (P from the hidden-state covariance) and the
real Jordan / diagonal form of W (2x2 rotation-scaling blocks for complex pairs; a real Schur form
when W is defective) are such maps. Every change is kept only if the network stays 100% accurate on
held-out sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.analysis.mips.training import TrainedRNN, predict

__all__ = [
    "diagonalize",
    "is_exact",
    "real_jordan_basis",
    "reparametrize",
    "simplify_linear",
    "snap_all",
    "snap_weights",
    "sparsify",
    "whiten",
]


def is_exact(trained: TrainedRNN, n: int = 1024, seed: int = 3) -> bool:
    """Every rounded output of `n` fresh sequences equals the reference."""
    x, y = trained.task.generate(n, seed=seed)
    return bool((predict(trained, x) == y).all())


def sparsify(trained: TrainedRNN, l1: float = 1e-4, steps: int = 200, lr: float = 1e-3) -> int:
    """L1 fine-tuning of W, U then zeroing the smallest weights while exact; returns how many were zeroed."""
    model = trained.model
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = trained.task.generate(1024, seed=5)
    feats = trained.features(x)
    if trained.classes is None:
        opt = torch.optim.Adam([model.W, model.U], lr=lr)
        target = torch.as_tensor(y, dtype=torch.float64)
        for _ in range(steps):
            loss = ((model(feats) - target) / model.y_scale).pow(2).mean() + l1 * (
                model.W.abs().sum() + model.U.abs().sum()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        if not is_exact(trained):
            model.load_state_dict(backup)
    zeroed = 0
    for param in (model.W, model.U):
        for idx in np.argsort(param.detach().abs().numpy().ravel()):
            flat = param.data.view(-1)
            if flat[idx] == 0:
                continue
            old = flat[idx].item()
            if abs(old) > 0.05 * float(param.detach().abs().max()):
                break
            flat[idx] = 0.0
            if is_exact(trained, n=256):
                zeroed += 1
            else:
                flat[idx] = old
                break
    return zeroed


def snap_weights(trained: TrainedRNN, grid: float = 0.5, tol: float = 0.02) -> int:
    """Round recurrent weights within `tol` of a multiple of `grid` to it, keeping exactness; returns the count."""
    snapped = 0
    with torch.no_grad():
        flat = trained.model.W.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            new = round(old / grid) * grid
            if old != new and abs(old - new) < tol:
                flat[i] = new
                if is_exact(trained, n=256):
                    snapped += 1
                else:
                    flat[i] = old
    return snapped


def _first_readout_layer(model) -> torch.nn.Linear:
    return model.readout if isinstance(model.readout, torch.nn.Linear) else model.readout[0]


def reparametrize(trained: TrainedRNN, p: np.ndarray) -> None:
    """Exact change of basis h -> P^-1 h of a linear recurrence, in place.

    W' = P^-1 W P, U' = P^-1 U, b' = P^-1 b, V' = V P (the readout's first layer).
    """
    model = trained.model
    if model.spec.family != "linear":
        raise ValueError(f"a change of basis is exact only for a linear recurrence, not {model.spec.family!r}")
    p_t = torch.as_tensor(np.asarray(p, dtype=np.float64))  # [d, d]
    if p_t.shape != model.W.shape:
        raise ValueError(f"the basis must be {tuple(model.W.shape)}, got {tuple(p_t.shape)}")
    if np.linalg.cond(p_t.numpy()) > 1e8:
        raise ValueError("the basis is singular (condition number above 1e8)")
    p_inv = torch.linalg.inv(p_t)
    lin = _first_readout_layer(model)
    with torch.no_grad():
        model.W.copy_(p_inv @ model.W @ p_t)
        model.U.copy_(p_inv @ model.U)
        model.b.copy_(p_inv @ model.b)
        lin.weight.copy_(lin.weight @ p_t)


def whiten(trained: TrainedRNN, n: int = 512, seed: int = 5, eps: float = 1e-9) -> np.ndarray:
    """Reparametrise so the hidden states have identity covariance (principal axes, unit variance); returns P."""
    x, _ = trained.task.generate(n, seed=seed)
    h = trained.model.hidden_states(trained.features(x)).numpy().reshape(-1, trained.model.state_size)  # [N, d]
    cov = np.cov(h, rowvar=False).reshape(h.shape[1], h.shape[1])
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    p = vecs[:, order] * np.sqrt(np.maximum(vals[order], eps))  # h = P h', h' white
    reparametrize(trained, p)
    return p


def real_jordan_basis(w: np.ndarray, max_cond: float = 1e6) -> np.ndarray:
    """Columns putting W in real block-diagonal form: real eigenvectors, and (Re v, Im v) per complex pair.

    W P = P D with D diagonal plus 2x2 blocks [[a, b], [-b, a]]. A defective (Jordan-block) W has an
    ill-conditioned eigenvector matrix; then the real Schur vectors are returned (an orthogonal
    basis in which W is upper triangular with the same blocks on the diagonal).
    """
    vals, vecs = np.linalg.eig(w)
    cols, done = [], set()
    for i in np.argsort(-np.abs(vals), kind="stable"):
        if i in done:
            continue
        done.add(i)
        if abs(vals[i].imag) < 1e-9:
            v = vecs[:, i].real
            cols.append(v / (np.abs(v).max() or 1.0))
        else:
            j = next(
                (k for k in range(len(vals)) if k not in done and np.isclose(vals[k], np.conj(vals[i]))), None
            )
            if j is not None:
                done.add(j)
            v = vecs[:, i]
            v = v / v[np.abs(v).argmax()]
            cols += [v.real, v.imag]
    p = np.stack(cols, 1)[:, : w.shape[0]]
    if p.shape[1] < w.shape[0] or np.linalg.cond(p) > max_cond:
        from scipy.linalg import schur

        _, p = schur(w, output="real")
    return p


def diagonalize(trained: TrainedRNN) -> bool:
    """Put W of a linear net in real Jordan / diagonal form, kept only if the net stays exact; returns success."""
    model = trained.model
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        reparametrize(trained, real_jordan_basis(model.W.detach().numpy()))
    except ValueError:
        return False
    if is_exact(trained, n=256):
        return True
    model.load_state_dict(backup)
    return False


def snap_all(trained: TrainedRNN, grid: float = 0.5, tol: float = 0.02) -> int:
    """`snap_weights` on W, U and b (in that order), each entry kept only if the net stays exact."""
    snapped = 0
    model = trained.model
    with torch.no_grad():
        for param in (model.W, model.U, model.b):
            if not param.requires_grad and param is model.b and not model.spec.bias:
                continue
            scale = model.x_scale if param is model.U else None
            flat = param.data.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                col = i % param.shape[1] if param.dim() == 2 else 0
                unit = float(scale[col]) if scale is not None else 1.0  # snap U in raw-input units
                new = round(old * unit / grid) * grid / unit
                if old != new and abs(old - new) * unit < tol:
                    flat[i] = new
                    if is_exact(trained, n=256):
                        snapped += 1
                    else:
                        flat[i] = old
    return snapped


def simplify_linear(trained: TrainedRNN, sparsify_steps: int = 100) -> dict[str, int | bool]:
    """The whole simplification of a linear net: sparsify, real Jordan form, integer snapping; what each did."""
    report: dict[str, int | bool] = {"zeroed": sparsify(trained, steps=sparsify_steps)}
    report["diagonal"] = diagonalize(trained)
    report["snapped"] = snap_all(trained)
    return report
