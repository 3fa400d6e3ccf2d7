"""Simplify a trained RNN without losing exactness (Michaud et al. 2024, Sec. 3.2): L1 pruning and integer snapping.

Every change is kept only if the network stays 100% accurate on held-out sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.analysis.mips.training import TrainedRNN, predict

__all__ = ["is_exact", "snap_weights", "sparsify"]


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
