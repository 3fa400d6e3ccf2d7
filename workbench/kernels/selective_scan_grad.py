"""S6 selective scan with a hand-written backward pass (the adjoint scan), for training on CPU.

Autograd through a scan records one node per elementwise op per chunk and keeps every
intermediate; this function keeps only the decays and the states of the forward pass and computes
every gradient with one reverse linear scan, as Mamba's fused kernel does (Gu & Dao 2023, §3.3.2):

  forward  s_t = a_t ⊙ s_{t−1} + b_t,  a_t = exp(Δ_t A),  b_t = Δ_t u_t B_t,  y_t = C_t·s_t + D u_t
  backward g_t = ∂L/∂s_t = (∂L/∂y_t) C_t + a_{t+1} ⊙ g_{t+1}   (reverse scan)
           ∂L/∂a_t = g_t ⊙ s_{t−1},  ∂L/∂b_t = g_t,  ∂L/∂s_{−1} = a_0 ⊙ g_0
"""

from __future__ import annotations

import torch
from torch import Tensor


class _SelectiveScanFunction(torch.autograd.Function):
    """(u, delta, A, B, C, D, state0) -> (y, last state) with the adjoint-scan backward.

    Both passes walk the positions one at a time on position-major `[batch, d, n]` slices that
    stay in cache; only the states are kept for the backward pass, decays are recomputed.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, state0):  # noqa: D102 - shapes in selective_scan_trainable
        u_t, delta_t = u.transpose(0, 1), delta.transpose(0, 1)  # [pos, batch, d]
        B_t, C_t = B.transpose(0, 1), C.transpose(0, 1)  # [pos, batch, n]
        length = u.shape[1]
        states = u.new_empty(length, *state0.shape)  # [pos, batch, d, n]
        y = u.new_empty(length, u.shape[0], u.shape[2])  # [pos, batch, d]
        s = state0
        for t in range(length):
            decay = torch.exp(delta_t[t, :, :, None] * A)  # [batch, d, n]
            drive = (delta_t[t] * u_t[t])[:, :, None] * B_t[t, :, None, :]
            s = torch.addcmul(drive, decay, s, out=states[t])
            torch.linalg.vecdot(s, C_t[t, :, None, :], out=y[t])
        y = y.transpose(0, 1) + D * u  # [batch, pos, d]
        ctx.save_for_backward(u, delta, A, B, C, D, state0, states)
        return y, states[-1].clone()

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, D, state0, states = ctx.saved_tensors
        length = u.shape[1]
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        u_t, delta_t, gy_t = u.transpose(0, 1), delta.transpose(0, 1), grad_y.transpose(0, 1)
        B_t, C_t = B.transpose(0, 1), C.transpose(0, 1)
        grad_u = torch.empty_like(u_t)  # [pos, batch, d]
        grad_delta = torch.empty_like(delta_t)
        grad_B = torch.empty_like(B_t)  # [pos, batch, n]
        grad_C = torch.empty_like(C_t)
        grad_A = torch.zeros_like(A)
        g = torch.zeros_like(state0) if grad_last is None else grad_last.clone()  # dL/ds_t
        for t in range(length - 1, -1, -1):
            g = torch.addcmul(g, gy_t[t, :, :, None], C_t[t, :, None, :])  # [batch, d, n]
            previous = states[t - 1] if t > 0 else state0
            decay = torch.exp(delta_t[t, :, :, None] * A)
            grad_exponent = g * previous * decay  # dL/d(Δ_t A)
            g_dot_B = torch.linalg.vecdot(g, B_t[t, :, None, :])  # [batch, d]
            grad_delta[t] = torch.linalg.vecdot(grad_exponent, A) + g_dot_B * u_t[t]
            grad_u[t] = g_dot_B * delta_t[t]
            grad_A.add_((grad_exponent * delta_t[t, :, :, None]).sum(0))
            grad_B[t] = torch.einsum("bdn,bd->bn", g, delta_t[t] * u_t[t])
            grad_C[t] = torch.einsum("bd,bdn->bn", gy_t[t], states[t])
            g = g * decay
        grad_u = grad_u.transpose(0, 1) + grad_y * D
        grad_D = (grad_y * u).sum((0, 1))  # [d]
        return (grad_u, grad_delta.transpose(0, 1), grad_A, grad_B.transpose(0, 1),
                grad_C.transpose(0, 1), grad_D, g)


def selective_scan_trainable(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
    state0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """S6 scan with the adjoint-scan backward: (y [batch, pos, d], last state [batch, d, n]).

    u, delta: [batch, pos, d]; A: [d, n]; B, C: [batch, pos, n]; D: [d]; state0: [batch, d, n].
    Memory: the states of the forward pass, batch x pos x d x n values.
    """
    if state0 is None:
        state0 = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    return _SelectiveScanFunction.apply(u, delta, A, B, C, D, state0)
