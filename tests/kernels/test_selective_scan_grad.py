"""The adjoint-scan backward of the S6 scan equals autograd through the step-by-step reference."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels import selective_scan_reference
from workbench.kernels.selective_scan_grad import selective_scan_trainable


def s6_inputs(batch=2, pos=9, d=5, n=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, pos, d, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(batch, pos, d, generator=g, dtype=dtype))
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 2
    B = torch.randn(batch, pos, n, generator=g, dtype=dtype)
    C = torch.randn(batch, pos, n, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    state0 = torch.randn(batch, d, n, generator=g, dtype=dtype)
    return [t.requires_grad_(True) for t in (u, delta, A, B, C, D, state0)]


@pytest.mark.parametrize("pos", [1, 2, 17])
def test_gradients_equal_autograd_through_the_reference_loop(pos):
    inputs = s6_inputs(pos=pos)
    y, last = selective_scan_trainable(*inputs)
    y_ref, last_ref = selective_scan_reference(*inputs)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(last, last_ref, atol=1e-12, rtol=1e-12)
    weights = torch.randn_like(y), torch.randn_like(last)
    grads = torch.autograd.grad((y * weights[0]).sum() + (last * weights[1]).sum(), inputs)
    grads_ref = torch.autograd.grad((y_ref * weights[0]).sum() + (last_ref * weights[1]).sum(), inputs)
    for name, got, want in zip("u delta A B C D state0".split(), grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_gradcheck():
    inputs = s6_inputs(batch=1, pos=4, d=2, n=2)
    assert torch.autograd.gradcheck(lambda *x: selective_scan_trainable(*x), inputs)
