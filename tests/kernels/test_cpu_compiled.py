"""The compiled C++ selective scan equals the step-by-step S6 loop, and the S6 mixer dispatches to it.

The extension is built once per session by the module-scope fixture (about 30-60 s on 2 cores the
first time; later sessions load it from torch's extensions cache). Without a C++ compiler or ninja
the tests that need the kernel are skipped with the reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import cpu_compiled, selective_scan_reference
from workbench.kernels.cpu_compiled import compiled_kernels_available, compiled_selective_scan, use_compiled_scan
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook

from .oracles import RNN_CASES, TOL, gru_steps, library_rnn_case, lstm_steps, require_compiled, s6_inputs


@pytest.fixture(scope="module")
def kernel():
    """Build (or load) the extension once for this module; skip if it cannot be built here."""
    return require_compiled(compiled_selective_scan)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 40)),
    d=st.one_of(st.integers(1, 9), st.integers(60, 140)),  # partial channel blocks of 64 and 8
    n=st.sampled_from([1, 3, 5, 8, 16, 17]),  # n % 8 == 0 takes the vector transpose / streaming stores
    dtype=st.sampled_from([torch.float32, torch.float64]),
    with_state0=st.booleans(),
    return_states=st.booleans(),
)
def test_compiled_scan_matches_reference(kernel, seed, batch, pos, d, n, dtype, with_state0, return_states):
    u, delta, A, B, C, D, state0 = s6_inputs(seed, batch, pos, d, n, dtype)
    state0 = state0 if with_state0 else None
    y_ref, s_ref = selective_scan_reference(u, delta, A, B, C, D, state0, return_states)
    y, s = kernel(u, delta, A, B, C, D, state0, return_states)
    assert y.dtype == dtype and s.dtype == dtype
    assert y.shape == (batch, pos, d)
    assert s.shape == ((batch, pos, d, n) if return_states else (batch, d, n))
    torch.testing.assert_close(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(s, s_ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_scan_long_sequence_and_mamba_width(kernel):
    # Mamba's n = 16 over a long sequence: errors of the float32 exp must not accumulate
    u, delta, A, B, C, D, state0 = s6_inputs(3, 2, 600, 130, 16, torch.float32)
    y_ref, s_ref = selective_scan_reference(u, delta, A, B, C, D, state0, return_states=True)
    y, s = kernel(u, delta, A, B, C, D, state0, return_states=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)


def test_compiled_scan_takes_views_and_promotes(kernel):
    u, delta, A, B, C, D, state0 = s6_inputs(4, 2, 12, 10, 8, torch.float32)
    u_view = u.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    y_ref, s_ref = selective_scan_reference(u.double(), delta, A, B, C, D, state0)
    y, s = kernel(u_view.double(), delta, A, B, C, D, state0)  # one float64 input promotes all
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("with_state0", [False, True])
def test_compiled_scan_empty_sequence_returns_the_initial_state(kernel, with_state0):
    u, delta, A, B, C, D, state0 = s6_inputs(5, 2, 0, 4, 3, torch.float32)
    state0 = state0 if with_state0 else None
    y, last = kernel(u, delta, A, B, C, D, state0)
    assert y.shape == (2, 0, 4)
    torch.testing.assert_close(last, state0 if with_state0 else torch.zeros(2, 4, 3))
    _, states = kernel(u, delta, A, B, C, D, state0, return_states=True)
    assert states.shape == (2, 0, 4, 3)


@pytest.mark.parametrize(("groups", "width", "n", "dtype"), [
    (2, 5, 8, torch.float64),  # narrow groups: one partial block each
    (3, 70, 16, torch.float32),  # groups wider than a block of 64 channels: blocks never straddle groups
    (2, 64, 3, torch.float64),
])
def test_compiled_scan_groups_equal_one_scan_per_group(kernel, groups, width, n, dtype):
    # B, C [batch, pos, groups, n]: channel c reads group c // width, as Mamba-2's groups of heads do
    batch, pos, d = 2, 9, groups * width
    u, delta, A, _, _, D, state0 = s6_inputs(7, batch, pos, d, n, dtype)
    gen = torch.Generator().manual_seed(8)
    B, C = (torch.randn(batch, pos, groups, n, dtype=dtype, generator=gen) for _ in range(2))
    for return_states in (False, True):
        y, s = kernel(u, delta, A, B, C, D, state0, return_states)
        for g in range(groups):
            c = slice(g * width, (g + 1) * width)
            y_ref, s_ref = selective_scan_reference(u[..., c], delta[..., c], A[c], B[:, :, g], C[:, :, g], D[c],
                                                    state0[:, c], return_states)
            torch.testing.assert_close(y[..., c], y_ref, rtol=TOL[dtype], atol=TOL[dtype])
            torch.testing.assert_close(s[..., c, :], s_ref, rtol=TOL[dtype], atol=TOL[dtype])
    with pytest.raises(ValueError, match="groups dividing d"):
        kernel(u[..., 1:], delta[..., 1:], A[1:], B, C, D[1:])


def test_compiled_scan_rejects_bad_shapes(kernel):
    u, delta, A, B, C, D, state0 = s6_inputs(6, 2, 5, 4, 3, torch.float32)
    with pytest.raises(ValueError, match="shapes do not fit S6"):
        kernel(u, delta, A, B[:, :, :2], C, D)
    with pytest.raises(ValueError, match="state0"):
        kernel(u, delta, A, B, C, D, state0[:, :2])
    with pytest.raises(ValueError, match="float32 and float64"):
        kernel(u.to(torch.complex64), delta, A, B, C, D)


def test_env_switch_disables_the_kernel(kernel, monkeypatch):
    monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")
    assert not compiled_kernels_available()
    assert not use_compiled_scan(torch.zeros(1, 2, 3))
    with pytest.raises(RuntimeError, match="unavailable"):
        compiled_selective_scan(*s6_inputs(0, 1, 2, 3, 4, torch.float32)[:6])


def test_failed_build_falls_back_and_logs_once(monkeypatch, caplog):
    calls = []

    def broken_build():
        calls.append(1)
        raise OSError("no C++ compiler here")

    monkeypatch.delenv(cpu_compiled.DISABLE_ENV, raising=False)
    monkeypatch.setattr(cpu_compiled, "_module", None)
    monkeypatch.setattr(cpu_compiled, "_failed", False)
    monkeypatch.setattr(cpu_compiled, "_build", broken_build)
    with caplog.at_level(logging.WARNING, logger=cpu_compiled.__name__):
        assert not compiled_kernels_available()
        assert not use_compiled_scan(torch.zeros(1, 2, 3))
    assert len(calls) == 1  # the build is tried once per process
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no C++ compiler here" in caplog.records[0].message


def test_use_compiled_scan_only_without_gradient(kernel):
    x = torch.zeros(1, 2, 3)
    assert use_compiled_scan(x, None)
    w = torch.zeros(3, requires_grad=True)
    assert not use_compiled_scan(x, w)
    with torch.no_grad():
        assert use_compiled_scan(x, w)
    assert not use_compiled_scan(x.half())


def _s6_mixer():
    torch.manual_seed(0)
    cfg = RecurrentConfig(family="s6", n_layers=1, d_model=24, d_hidden=80, d_vocab=2, d_state=16)
    return MIXERS["s6"](cfg).eval()


def test_s6_mixer_dispatches_to_the_compiled_scan(kernel, monkeypatch):
    mixer = _s6_mixer()
    x = torch.randn(2, 33, 24)
    with torch.no_grad():
        out_ref, state_ref = mixer(x, None, "reference")
        out, state = mixer(x, None, "fused")
        assert mixer.last_kernel == "compiled C++ selective scan (CPU)"
        first, carried = mixer(x[:, :2], None, "fused")  # shorter than the conv: its state mixes inputs
        second, state_split = mixer(x[:, 2:], carried, "fused")
        monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")
        out_torch, state_torch = mixer(x, None, "fused")
        assert mixer.last_kernel == "chunked selective scan"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, out_torch, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([first, second], dim=1), out_ref, rtol=1e-5, atol=1e-5)
    for name in ("state", "conv"):
        torch.testing.assert_close(state[name], state_ref[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state_split[name], state_ref[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state_torch[name], state_ref[name], rtol=1e-5, atol=1e-5)


def _conv_reference(x, conv_state, weight, bias):
    """SiLU(depthwise conv1d over (conv_state, x) along time), as the S6 mixer's PyTorch path."""
    padded = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)  # [batch, d, k-1+pos]
    u = torch.nn.functional.silu(torch.nn.functional.conv1d(padded, weight, bias, groups=x.shape[-1]))
    return u.transpose(1, 2), padded[..., padded.shape[-1] - (weight.shape[-1] - 1):]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.integers(0, 3), st.integers(1, 50)),  # shorter than the kernel: state and x mix
    d=st.one_of(st.integers(1, 9), st.integers(60, 140)),
    k=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    with_bias=st.booleans(),
)
def test_compiled_conv_silu_matches_conv1d(kernel, seed, batch, pos, d, k, dtype, with_bias):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, pos, d, dtype=dtype, generator=gen)
    conv_state = torch.randn(batch, d, k - 1, dtype=dtype, generator=gen)
    weight = torch.randn(d, 1, k, dtype=dtype, generator=gen)
    bias = torch.randn(d, dtype=dtype, generator=gen) if with_bias else None
    u, state = cpu_compiled.compiled_causal_conv_silu(x, conv_state, weight, bias)
    if pos == 0:  # conv1d itself refuses an input shorter than its kernel
        assert u.shape == (batch, 0, d)
        torch.testing.assert_close(state, conv_state, rtol=0, atol=0)
        return
    u_ref, state_ref = _conv_reference(x, conv_state, weight, bias)
    torch.testing.assert_close(u, u_ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(state, state_ref, rtol=0, atol=0)


def test_compiled_conv_silu_rejects_bad_shapes(kernel):
    x, conv_state, weight = torch.zeros(1, 5, 4), torch.zeros(1, 4, 3), torch.zeros(4, 1, 4)
    with pytest.raises(ValueError, match="depthwise conv"):
        cpu_compiled.compiled_causal_conv_silu(x, conv_state[:, :, :2], weight, None)
    with pytest.raises(ValueError, match="kernel widths"):
        cpu_compiled.compiled_causal_conv_silu(x, torch.zeros(1, 4, 16), torch.zeros(4, 1, 17), None)


@settings(max_examples=30, deadline=None)
@given(**RNN_CASES)
def test_compiled_lstm_recording_matches_the_equations(kernel, seed, batch, pos, d_in, hidden, bias, dtype):
    rnn, x, h0, weights = library_rnn_case(torch.nn.LSTM, seed, batch, pos, d_in, hidden, bias, dtype)
    c0 = torch.randn(batch, hidden, dtype=dtype)
    with torch.no_grad():
        expected = lstm_steps(x, h0, c0, *weights)
        got = cpu_compiled.compiled_lstm_forward_recording(x, h0, c0, *weights)
        h_lib, _ = rnn(x, (h0[None], c0[None]))
    assert set(got) == set("ifgoch")
    for name in "ifgoch":
        assert got[name].shape == (batch, pos, hidden) and got[name].dtype == dtype
        torch.testing.assert_close(got[name], expected[name], rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(got["h"], h_lib, rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_lstm_recording_rejects_bad_shapes(kernel):
    rnn = torch.nn.LSTM(3, 4, batch_first=True)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    x, h0 = torch.zeros(2, 5, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="do not fit an LSTM"):
        cpu_compiled.compiled_lstm_forward_recording(x, h0[:1], h0, *weights)
    with pytest.raises(ValueError, match="do not fit an LSTM"):
        cpu_compiled.compiled_lstm_forward_recording(torch.zeros(2, 5, 2), h0, h0, *weights)


def _both_paths(family: str, seed: int):
    """A small mixer of `family` run on the reference then the fused path, every hook recorded."""
    torch.manual_seed(seed)
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=12, d_hidden=16, d_vocab=2)
    mixer = MIXERS[family](cfg).eval()
    x = torch.randn(2, 25, 12)
    store: dict[str, torch.Tensor] = {}
    record_every_hook(mixer, store)
    with torch.no_grad():
        out_ref, state_ref = mixer(x, None, "reference")
        recorded_ref = {k: v.clone() for k, v in store.items()}
        out, state = mixer(x, None, "fused")
    return mixer, x, store, recorded_ref, (out, state), (out_ref, state_ref)


def test_lstm_mixer_records_through_the_compiled_loop(kernel, monkeypatch):
    mixer, x, store, recorded_ref, (out, state), (out_ref, state_ref) = _both_paths("lstm", seed=1)
    assert mixer.last_kernel == "compiled C++ gate-writing LSTM loop (CPU, no grad)"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for name in ("hook_i", "hook_f", "hook_g", "hook_o", "hook_c", "hook_h"):
        torch.testing.assert_close(store[name], recorded_ref[name], rtol=1e-5, atol=1e-5)
    for name in ("h", "c"):
        torch.testing.assert_close(state[name], state_ref[name], rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(**RNN_CASES)
def test_compiled_gru_recording_matches_the_equations(kernel, seed, batch, pos, d_in, hidden, bias, dtype):
    rnn, x, h0, weights = library_rnn_case(torch.nn.GRU, seed, batch, pos, d_in, hidden, bias, dtype)
    with torch.no_grad():
        expected = gru_steps(x, h0, *weights)
        got = cpu_compiled.compiled_gru_forward_recording(x, h0, *weights)
        h_lib, h_last = rnn(x, h0[None])
    assert set(got) == set("rznh")
    for name in "rznh":
        assert got[name].shape == (batch, pos, hidden) and got[name].dtype == dtype
        torch.testing.assert_close(got[name], expected[name], rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(got["h"], h_lib, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(got["h"][:, -1], h_last[0], rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_gru_recording_rejects_bad_shapes(kernel):
    rnn = torch.nn.GRU(3, 4, batch_first=True)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    x, h0 = torch.zeros(2, 5, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="do not fit a GRU"):
        cpu_compiled.compiled_gru_forward_recording(x, h0[:1], *weights)
    with pytest.raises(ValueError, match="do not fit a GRU"):
        cpu_compiled.compiled_gru_forward_recording(torch.zeros(2, 5, 2), h0, *weights)
    with pytest.raises(ValueError, match="do not fit a GRU"):
        cpu_compiled.compiled_gru_forward_recording(x, h0, weights[0], weights[1], weights[2][:6], None)


def test_gru_mixer_records_through_the_compiled_loop(kernel, monkeypatch):
    mixer, x, store, recorded_ref, (out, state), (out_ref, state_ref) = _both_paths("gru", seed=2)
    assert mixer.last_kernel == "compiled C++ gate-writing GRU loop (CPU, no grad)"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for name in ("hook_r", "hook_z", "hook_n", "hook_h"):
        torch.testing.assert_close(store[name], recorded_ref[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["h"], state_ref["h"], rtol=1e-5, atol=1e-5)
    monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")  # switched off: the PyTorch paths, same numbers
    with torch.no_grad():
        out_off, _ = mixer(x, None, "fused")
    assert "compiled" not in mixer.last_kernel
    torch.testing.assert_close(out_off, out_ref, rtol=1e-5, atol=1e-5)


def test_stale_build_lock_is_removed_and_a_live_one_awaited(tmp_path, monkeypatch):
    lock = tmp_path / "lock"
    lock.write_text("")
    old = time.time() - cpu_compiled.STALE_LOCK_S - 5
    os.utime(lock, (old, old))  # left by a process killed mid-build
    cpu_compiled._wait_for_lock(str(tmp_path))
    assert not lock.exists()
    lock.write_text("")  # a live build: released after a moment, never removed by us
    timer = threading.Timer(0.3, lock.unlink)
    timer.start()
    started = time.monotonic()
    cpu_compiled._wait_for_lock(str(tmp_path))
    timer.join()
    assert time.monotonic() - started >= 0.3 and not lock.exists()
