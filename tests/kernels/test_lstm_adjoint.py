"""The LSTM's written-out backward against autograd through the readable step loop: every quantity's
adjoint (via zero probes), and the gradients of the input projection, initial state and weights."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels.lstm_adjoint import LSTM_QUANTITIES, lstm_with_adjoint


def step_loop(x_proj, h0, c0, weight_hh, bias_hh, probes):
    """The LSTM step by step, adding probes[q][:, t] to each quantity q at t (autograd's reference)."""
    h, c, values = h0, c0, {q: [] for q in LSTM_QUANTITIES}
    for t in range(x_proj.shape[1]):
        i_pre, f_pre, g_pre, o_pre = (x_proj[:, t] + h @ weight_hh.T + bias_hh).chunk(4, dim=-1)
        i = torch.sigmoid(i_pre) + probes["i"][:, t]
        f = torch.sigmoid(f_pre) + probes["f"][:, t]
        g = torch.tanh(g_pre) + probes["g"][:, t]
        o = torch.sigmoid(o_pre) + probes["o"][:, t]
        c = f * c + i * g + probes["c"][:, t]
        h = o * torch.tanh(c) + probes["h"][:, t]
        for q, v in zip(LSTM_QUANTITIES, (i, f, g, o, c, h), strict=True):
            values[q].append(v)
    return {q: torch.stack(v, 1) for q, v in values.items()}


@pytest.mark.parametrize(("batch", "length", "hidden"), [(2, 7, 5), (1, 1, 3), (3, 2, 1)])
def test_the_adjoint_equals_autograd_through_the_step_loop(batch, length, hidden):
    gen = torch.Generator().manual_seed(batch * 100 + length)

    def rand(*shape, grad=True):
        return torch.randn(*shape, dtype=torch.float64, generator=gen).requires_grad_(grad)

    x_proj, h0, c0 = rand(batch, length, 4 * hidden), rand(batch, hidden), rand(batch, hidden)
    weight_hh, bias_hh = rand(4 * hidden, hidden), rand(4 * hidden)
    probes = {q: torch.zeros(batch, length, hidden, dtype=torch.float64, requires_grad=True) for q in LSTM_QUANTITIES}
    grad_h, grad_h_final, grad_c_final = rand(batch, length, hidden, grad=False), rand(batch, hidden, grad=False), \
        rand(batch, hidden, grad=False)
    inputs = (x_proj, h0, c0, weight_hh, bias_hh, *probes.values())

    expected_values = step_loop(x_proj, h0, c0, weight_hh, bias_hh, probes)
    loss = ((expected_values["h"] * grad_h).sum() + (expected_values["h"][:, -1] * grad_h_final).sum()
            + (expected_values["c"][:, -1] * grad_c_final).sum())
    expected = torch.autograd.grad(loss, inputs)

    values = {q: v.detach() for q, v in expected_values.items()}
    h, final = lstm_with_adjoint(values, x_proj, {"h": h0, "c": c0}, weight_hh, bias_hh, probes)
    torch.testing.assert_close(h, values["h"], rtol=0, atol=0)
    loss = (h * grad_h).sum() + (final["h"] * grad_h_final).sum() + (final["c"] * grad_c_final).sum()
    got = torch.autograd.grad(loss, inputs)
    names = ["x_proj", "h0", "c0", "weight_hh", "bias_hh", *LSTM_QUANTITIES]
    for name, g, e in zip(names, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)


def test_unprobed_quantities_and_inputs_without_grad_get_none():
    x_proj = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    state = {"h": torch.zeros(1, 2, dtype=torch.float64), "c": torch.zeros(1, 2, dtype=torch.float64)}
    weight_hh, bias_hh = torch.randn(8, 2, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    with torch.no_grad():
        values = step_loop(x_proj, state["h"], state["c"], weight_hh, bias_hh,
                           {q: torch.zeros(1, 3, 2, dtype=torch.float64) for q in LSTM_QUANTITIES})
    probe = torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True)
    h, _ = lstm_with_adjoint(values, x_proj, state, weight_hh, bias_hh, {"c": probe})
    h.sum().backward()
    assert probe.grad is not None and probe.grad.abs().sum() > 0
    assert x_proj.grad is not None and weight_hh.grad is None
