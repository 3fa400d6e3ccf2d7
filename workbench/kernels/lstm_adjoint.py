"""The LSTM's backward through time with the gradient of every recorded quantity, for `incl_bwd`.

`run_with_cache(..., incl_bwd=True)` asks for dL/dX_t of each hooked gate and state at each
position: the change of the loss under an additive change of X at t carried through every later
step (docs/design.md, "Gradients through everything"). Autograd gives it through a step loop with
zero probes, one Python step at a time forward and backward. Here the forward values come from the
fast recording kernel and the backward is the LSTM's adjoint recursion written out: per step one
matrix product and a few elementwise products, everything else vectorised over positions.

With x the input projection, pre_t = x_t + W_hh h_{t-1} + b_hh, gates (i, f, g, o), c_t = f_t c_{t-1}
+ i_t g_t and h_t = o_t tanh(c_t), the adjoints running backwards from the loss are

    δh_t = ∂L/∂h_t (direct) + W_hhᵀ δpre_{t+1}
    δc_t = δh_t o_t (1 − tanh² c_t) + δc_{t+1} f_{t+1}
    δi_t = δc_t g_t,  δf_t = δc_t c_{t-1},  δg_t = δc_t i_t,  δo_t = δh_t tanh c_t
    δpre_t = (δi_t i_t(1 − i_t), δf_t f_t(1 − f_t), δg_t (1 − g_t²), δo_t o_t(1 − o_t)),

and dL/dX_t of a quantity X is its adjoint δX_t.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["LSTM_QUANTITIES", "LSTMAdjoint", "lstm_with_adjoint"]

LSTM_QUANTITIES: tuple[str, ...] = ("i", "f", "g", "o", "c", "h")  # the order of `probes`


class LSTMAdjoint(torch.autograd.Function):
    """Forward: the recorded h [batch, pos, H] and final (h, c), with a graph to x_proj, h0, c0, W_hh,
    b_hh and one zero probe per quantity (`LSTM_QUANTITIES`, each [batch, pos, H]). Backward: the
    adjoint recursion; each probe's gradient is its quantity's adjoint δX_t."""

    @staticmethod
    def forward(ctx, values: dict[str, Tensor], x_proj: Tensor, h0: Tensor, c0: Tensor,  # noqa: ANN001
                weight_hh: Tensor, bias_hh: Tensor, *probes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        i, f, g, o, c, h = (values[q] for q in LSTM_QUANTITIES)  # [batch, pos, H] each
        ctx.save_for_backward(i, f, g, o, c, h, h0, c0, weight_hh)
        ctx.probed = tuple(p is not None and p.requires_grad for p in probes)
        return h.clone(), h[:, -1].clone(), c[:, -1].clone()

    @staticmethod
    def backward(ctx, grad_h: Tensor | None, grad_h_final: Tensor | None,  # noqa: ANN001
                 grad_c_final: Tensor | None) -> tuple[Tensor | None, ...]:
        i, f, g, o, c, h, h0, c0, weight_hh = ctx.saved_tensors
        batch, length, hidden = h.shape
        c_before = torch.cat([c0[:, None], c[:, :-1]], dim=1)  # [batch, pos, H]: c_{t-1}
        h_before = torch.cat([h0[:, None], h[:, :-1]], dim=1)  # [batch, pos, H]: h_{t-1}
        tanh_c = torch.tanh(c)
        # coefficients of the recursion, for every position at once, time-major for the loop
        through_h = (o * (1 - tanh_c * tanh_c)).transpose(0, 1).contiguous()  # [pos, batch, H]: ∂c→h
        keep = f.transpose(0, 1).contiguous()  # [pos, batch, H]
        i_slope, f_slope, o_slope = (x * (1 - x) for x in (i, f, o))  # σ'
        on_c = torch.stack([g * i_slope, c_before * f_slope, i * (1 - g * g)], dim=2)  # [batch, pos, 3, H]
        on_c = on_c.transpose(0, 1).contiguous()  # [pos, batch, 3, H]: δpre_{i,f,g} = δc · on_c
        on_h = (tanh_c * o_slope).transpose(0, 1).contiguous()  # [pos, batch, H]: δpre_o = δh · on_h
        direct = (torch.zeros_like(h) if grad_h is None else grad_h).transpose(0, 1).contiguous()  # [pos, b, H]

        delta_h = torch.empty_like(direct)  # [pos, batch, H]
        delta_c = torch.empty_like(direct)
        delta_pre = torch.empty(length, batch, 4 * hidden, dtype=h.dtype, device=h.device)
        if grad_h_final is not None:
            direct[-1] += grad_h_final
        carry_c = torch.zeros(batch, hidden, dtype=h.dtype, device=h.device)  # δc_{t+1} f_{t+1}
        if grad_c_final is not None:
            carry_c += grad_c_final
        # per-position views made once: the loop below is a handful of out= kernels per step
        steps = zip(direct.unbind(0), delta_h.unbind(0), delta_c.unbind(0), delta_pre.unbind(0),
                    through_h.unbind(0), keep.unbind(0), on_c.unbind(0), on_h.unbind(0), strict=True)
        carry_pre = None  # δpre_{t+1}
        for dh_direct, dh, dc, pre, to_h, kept, coef_c, coef_h in reversed(list(steps)):
            if carry_pre is None:
                dh.copy_(dh_direct)
            else:
                torch.addmm(dh_direct, carry_pre, weight_hh, out=dh)  # δh_t = direct + W_hhᵀ δpre_{t+1}
            torch.addcmul(carry_c, dh, to_h, out=dc)
            torch.mul(coef_c, dc[:, None], out=pre[:, : 3 * hidden].view(batch, 3, hidden))
            torch.mul(coef_h, dh, out=pre[:, 3 * hidden:])
            carry_c = dc * kept
            carry_pre = pre
        carry_h = carry_pre @ weight_hh  # [batch, H]: into h_{-1}

        delta_h, delta_c, delta_pre = (x.transpose(0, 1) for x in (delta_h, delta_c, delta_pre))  # [b, pos, .]
        needs = ctx.needs_input_grad
        grad_x = delta_pre if needs[1] else None
        grad_h0 = carry_h if needs[2] else None
        grad_c0 = carry_c if needs[3] else None
        grad_weight = delta_pre.flatten(0, 1).T @ h_before.flatten(0, 1) if needs[4] else None  # [4H, H]
        grad_bias = delta_pre.sum((0, 1)) if needs[5] else None  # [4H]
        adjoints = {"i": delta_c * g, "f": delta_c * c_before, "g": delta_c * i, "o": delta_h * tanh_c,
                    "c": delta_c, "h": delta_h}
        grad_probes = tuple(adjoints[q] if probed else None for q, probed in zip(LSTM_QUANTITIES, ctx.probed,
                                                                                 strict=True))
        return (None, grad_x, grad_h0, grad_c0, grad_weight, grad_bias, *grad_probes)


def lstm_with_adjoint(values: Mapping[str, Tensor], x_proj: Tensor, state: Mapping[str, Tensor],
                      weight_hh: Tensor, bias_hh: Tensor, probes: Mapping[str, Tensor]
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """(h [batch, pos, H], final state {h, c}) carrying the graph of `LSTMAdjoint`: the recorded
    `values` (every quantity of `LSTM_QUANTITIES`), their gradients delivered to `probes` (zero
    tensors that require grad, by quantity name)."""
    zero_probes = [probes.get(q) for q in LSTM_QUANTITIES]
    h, h_final, c_final = LSTMAdjoint.apply(dict(values), x_proj, state["h"], state["c"], weight_hh, bias_hh,
                                            *zero_probes)
    return h, {"h": h_final, "c": c_final}
