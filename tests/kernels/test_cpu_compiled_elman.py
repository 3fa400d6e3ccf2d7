"""The compiled C++ Elman recording loop equals the step equations and torch.nn.RNN, refuses bad
input, and the Elman mixer records through it on CPU without gradients (same numbers as the
reference path, edits replayed causally, PyTorch paths when switched off).

The extension is built once per session (see test_cpu_compiled.py); without a C++ compiler or ninja
the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from workbench.kernels import cpu_compiled
from workbench.kernels.cpu_compiled import compiled_elman_forward_recording
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook

from .oracles import RNN_CASES, TOL, elman_steps, library_rnn_case, require_compiled


@pytest.fixture(scope="module")
def kernel():
    """Build (or load) the extension once for this module; skip if it cannot be built here."""
    return require_compiled(compiled_elman_forward_recording)


@settings(max_examples=30, deadline=None)
@given(**RNN_CASES)
def test_compiled_elman_recording_matches_the_equations(kernel, seed, batch, pos, d_in, hidden, bias, dtype):
    rnn, x, h0, weights = library_rnn_case(torch.nn.RNN, seed, batch, pos, d_in, hidden, bias, dtype)
    with torch.no_grad():
        expected = elman_steps(x, h0, *weights)
        got = kernel(x, h0, *weights)
        h_lib, h_last = rnn(x, h0[None])
    assert set(got) == {"pre", "h"}
    for name in ("pre", "h"):
        assert got[name].shape == (batch, pos, hidden) and got[name].dtype == dtype
        torch.testing.assert_close(got[name], expected[name], rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(got["h"], h_lib, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(got["h"][:, -1], h_last[0], rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_elman_recording_long_and_wide(kernel):
    # 600 steps at H = 520 (> the in-place loop's 512: a matmul per step at batch 1), saturating inputs
    torch.manual_seed(11)
    rnn = torch.nn.RNN(7, 520, batch_first=True)
    x = torch.randn(1, 600, 7) * 3
    h0 = torch.zeros(1, 520)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    with torch.no_grad():
        got = kernel(x, h0, *weights)
        h_lib, _ = rnn(x)
    torch.testing.assert_close(got["h"], h_lib, rtol=1e-5, atol=1e-5)


def test_compiled_elman_recording_rejects_bad_input(kernel):
    rnn = torch.nn.RNN(3, 4, batch_first=True)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    x, h0 = torch.zeros(2, 5, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="do not fit an Elman RNN"):
        kernel(x, h0[:1], *weights)
    with pytest.raises(ValueError, match="do not fit an Elman RNN"):
        kernel(torch.zeros(2, 5, 2), h0, *weights)
    with pytest.raises(ValueError, match="do not fit an Elman RNN"):
        kernel(x, h0, weights[0], weights[1], weights[2][:3], None)
    with pytest.raises(ValueError, match=r"must be \[batch, pos, d_in\]"):
        kernel(x[0], h0, *weights)
    with pytest.raises(ValueError, match="float32/float64"):
        kernel(x.half(), h0, *weights)


def test_elman_mixer_records_through_the_compiled_loop(kernel, monkeypatch):
    torch.manual_seed(4)
    cfg = RecurrentConfig(family="elman", n_layers=1, d_model=12, d_hidden=16, d_vocab=2)
    mixer = MIXERS["elman"](cfg).eval()
    x = torch.randn(2, 25, 12)
    store: dict[str, torch.Tensor] = {}
    record_every_hook(mixer, store)
    with torch.no_grad():
        out_ref, state_ref = mixer(x, None, "reference")
        recorded_ref = {k: v.clone() for k, v in store.items()}
        out, state = mixer(x, None, "fused")
    assert mixer.last_kernel == "compiled C++ pre-activation-writing Elman loop (CPU, no grad)"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for name in ("hook_pre", "hook_h", "hook_out"):
        torch.testing.assert_close(store[name], recorded_ref[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["h"], state_ref["h"], rtol=1e-5, atol=1e-5)

    def edit(value, hook):  # sets h at position 9: later positions must follow from it on both paths
        value = value.clone()
        value[:, 9] = 0.5
        return value

    edited = {}
    for path in ("reference", "fused"):
        mixer.hook_h.add_hook(edit)
        with torch.no_grad():
            edited[path] = mixer(x, None, path)[0]
        mixer.hook_h.remove_hooks()
    assert mixer.last_kernel.startswith("compiled C++")
    torch.testing.assert_close(edited["fused"], edited["reference"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(edited["fused"][:, 9:], out[:, 9:])
    torch.testing.assert_close(edited["fused"][:, :9], out[:, :9], rtol=1e-6, atol=1e-6)

    monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")  # switched off: the PyTorch paths, same numbers
    with torch.no_grad():
        out_off, _ = mixer(x, None, "fused")
    assert "compiled" not in mixer.last_kernel
    torch.testing.assert_close(out_off, out_ref, rtol=1e-5, atol=1e-5)
