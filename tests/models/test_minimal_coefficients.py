"""minGRU / minLSTM: the no-grad coefficient path (in place, for recording memory) gives the same numbers
as the autograd path, and a hook's replacement value still feeds the scan."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels import g
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.mixers.minimal import _g_consuming


def _mixer(family: str):
    torch.manual_seed(0)
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=10, d_hidden=14, d_vocab=2)
    return MIXERS[family](cfg).eval()


def test_g_consuming_equals_g_exactly():
    x = torch.cat([torch.randn(2000) * 4, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0])])
    expected = g(x)
    got = _g_consuming(x.clone())
    assert torch.equal(got, expected)


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_no_grad_coefficients_equal_the_autograd_ones(family):
    mixer = _mixer(family)
    x = torch.randn(3, 20, 10) * 3
    a_grad, b_grad = mixer.coefficients(x)  # parameters require grad: the out-of-place path
    assert a_grad.requires_grad
    with torch.no_grad():
        a, b = mixer.coefficients(x)
    assert torch.equal(a, a_grad.detach()) and torch.equal(b, b_grad.detach())
    with torch.no_grad():
        out_fused, state_fused = mixer(x, None, "fused")
    out_ref, state_ref = mixer(x, None, "reference")  # with grad: the autograd path end to end
    torch.testing.assert_close(out_fused, out_ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state_fused["h"], state_ref["h"].detach(), rtol=1e-5, atol=1e-5)


def test_patched_gate_feeds_the_in_place_scan():
    mixer = _mixer("mingru")
    x = torch.randn(2, 9, 10)
    mixer.hook_z.add_hook(lambda value, hook: torch.full_like(value, 0.25))
    with torch.no_grad():
        a, b = mixer.coefficients(x)
        h_tilde = g(mixer.W_h(x))
    torch.testing.assert_close(a, torch.full_like(a, 0.75))
    torch.testing.assert_close(b, 0.25 * h_tilde)
