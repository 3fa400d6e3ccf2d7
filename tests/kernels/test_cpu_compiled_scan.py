"""The compiled C++ diagonal linear scan and the fused minGRU / minLSTM gates + scan equal their
step-by-step oracles, refuse bad input, and the minimal mixers dispatch to them on CPU without
gradients while keeping the hook contract (gate edits feed the scan, h edits replay causally).

The extension is built once per session (see test_cpu_compiled.py); without a C++ compiler or ninja
the tests that need it are skipped with the reason.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import cpu_compiled, g, linear_scan_reference
from workbench.kernels.cpu_compiled import (
    compiled_linear_scan,
    compiled_mingru_gates_scan,
    compiled_minlstm_gates_scan,
)
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook

from .oracles import TOL, require_compiled

WIDTHS = st.one_of(st.integers(1, 9), st.integers(15, 17), st.integers(60, 140))  # partial vectors and blocks


@pytest.fixture(scope="module")
def kernel():
    """Build (or load) the extension once for this module; skip if it cannot be built here."""
    return require_compiled(compiled_linear_scan)


# 1 thread: whole rows per task; 2: the rows of a batch of 1 are cut into channel blocks
THREADS = st.sampled_from([1, 2])


@contextmanager
def num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mingru_oracle(pre_z, pre_h, h0):
    z, h_tilde = torch.sigmoid(pre_z), g(pre_h)
    return z, h_tilde, linear_scan_reference(1 - z, z * h_tilde, h0)


def _minlstm_oracle(pre_f, pre_i, pre_h, h0):
    forget, inject = torch.sigmoid(pre_f), torch.sigmoid(pre_i)
    f, i = forget / (forget + inject), inject / (forget + inject)
    h_tilde = g(pre_h)
    return f, i, h_tilde, linear_scan_reference(f, i * h_tilde, h0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 40)),
    d=WIDTHS,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    with_h0=st.booleans(),
    threads=THREADS,
)
def test_compiled_linear_scan_matches_the_loop(kernel, threads, seed, batch, pos, d, dtype, with_h0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, pos, d, dtype=dtype, generator=gen) * 2.2 - 1.1  # |a| > 1 too: growth, sign flips
    b = torch.randn(batch, pos, d, dtype=dtype, generator=gen)
    h0 = torch.randn(batch, d, dtype=dtype, generator=gen) if with_h0 else None
    with num_threads(threads):
        h = kernel(a, b, h0)
    assert h.shape == (batch, pos, d) and h.dtype == dtype
    torch.testing.assert_close(h, linear_scan_reference(a, b, h0), rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_linear_scan_long_and_wider_than_a_block(kernel):
    # 4100 channels: more than one task's block (SCAN_MAX_BLOCK) even at 1 thread; 3000 positions
    gen = torch.Generator().manual_seed(7)
    a = torch.rand(1, 3000, 4100, generator=gen)
    b = torch.randn(1, 3000, 4100, generator=gen)
    h0 = torch.randn(1, 4100, generator=gen)
    torch.testing.assert_close(kernel(a, b, h0), linear_scan_reference(a, b, h0), rtol=1e-5, atol=1e-5)


def test_compiled_linear_scan_promotes_copies_views_and_takes_empty(kernel):
    a, b = torch.rand(2, 6, 5), torch.randn(2, 6, 5, dtype=torch.float64)
    a_view = a.transpose(0, 1).contiguous().transpose(0, 1)  # same values, not contiguous
    h = kernel(a_view, b, torch.zeros(2, 5))
    assert h.dtype == torch.float64
    torch.testing.assert_close(h, linear_scan_reference(a.double(), b), rtol=1e-10, atol=1e-10)
    assert kernel(torch.rand(2, 0, 5), torch.rand(2, 0, 5)).shape == (2, 0, 5)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 40)),
    d=WIDTHS,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    with_h0=st.booleans(),
    family=st.sampled_from(["mingru", "minlstm"]),
    threads=THREADS,
)
def test_compiled_gates_scan_matches_the_oracle(kernel, threads, seed, batch, pos, d, dtype, with_h0, family):
    gen = torch.Generator().manual_seed(seed)
    n_pre = 2 if family == "mingru" else 3
    pre = [torch.randn(batch, pos, d, dtype=dtype, generator=gen) * 4 for _ in range(n_pre)]  # both sides of g's 0
    h0 = torch.randn(batch, d, dtype=dtype, generator=gen) if with_h0 else None
    expected = (_mingru_oracle if family == "mingru" else _minlstm_oracle)(*pre, h0)
    run = compiled_mingru_gates_scan if family == "mingru" else compiled_minlstm_gates_scan
    inputs = [t.clone() for t in pre]
    with num_threads(threads):
        got = run(*inputs, h0)
    assert len(got) == n_pre + 1
    for gate, given_pre in zip(got[:-1], inputs, strict=True):
        assert gate.data_ptr() == given_pre.data_ptr()  # written over the pre-activation, as documented
    for value, want in zip(got, expected, strict=True):
        assert value.shape == (batch, pos, d) and value.dtype == dtype
        torch.testing.assert_close(value, want, rtol=TOL[dtype], atol=TOL[dtype])


def test_compiled_gates_scan_leaves_foreign_inputs_alone(kernel):
    pre_z = torch.randn(2, 7, 4, dtype=torch.float64)
    pre_h = torch.randn(7, 2, 4).transpose(0, 1)  # float32, not contiguous: promoted into a copy
    keep_z, keep_h = pre_z.clone(), pre_h.clone()
    z, h_tilde, h = compiled_mingru_gates_scan(pre_z, pre_h)
    assert torch.equal(pre_h, keep_h) and not torch.equal(pre_z, keep_z)  # only the float64 one is consumed
    expected = _mingru_oracle(keep_z, keep_h.double(), None)
    for value, want in zip((z, h_tilde, h), expected, strict=True):
        torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-10)


def test_bad_input_is_refused(kernel):
    a, b = torch.rand(2, 5, 4), torch.rand(2, 5, 4)
    with pytest.raises(ValueError, match=r"equal \[batch, pos, d\] shapes"):
        compiled_linear_scan(a, b[:, :, :3])
    with pytest.raises(ValueError, match=r"equal \[batch, pos, d\] shapes"):
        compiled_linear_scan(a[0], b[0])
    with pytest.raises(ValueError, match="h0 must be"):
        compiled_linear_scan(a, b, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="float32 and float64"):
        compiled_linear_scan(a.to(torch.complex64), b)
    with pytest.raises(ValueError, match="float32 and float64"):
        compiled_mingru_gates_scan(a, b.to(torch.complex128))
    with pytest.raises(ValueError, match="equal"):
        compiled_minlstm_gates_scan(a, b, b[:1])
    shared = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="must not share memory"):
        compiled_mingru_gates_scan(shared, shared)


def test_disabled_kernels_raise_and_are_not_used(kernel, monkeypatch):
    monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")
    assert not cpu_compiled.use_compiled_kernels(torch.zeros(1, 2, 3))
    with pytest.raises(RuntimeError, match="unavailable"):
        compiled_linear_scan(torch.rand(1, 2, 3), torch.rand(1, 2, 3))
    with pytest.raises(RuntimeError, match="unavailable"):
        compiled_mingru_gates_scan(torch.rand(1, 2, 3), torch.rand(1, 2, 3))


def _mixer(family: str):
    torch.manual_seed(3)
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=12, d_hidden=20, d_vocab=2)
    return MIXERS[family](cfg).eval()


def _run(mixer, x, path, h0=None):
    """(out, final h, every recorded hook) of a no-grad call on `path`."""
    store: dict[str, torch.Tensor] = {}
    handles = record_every_hook(mixer, store)
    state = None if h0 is None else {"h": h0}
    with torch.no_grad():
        out, final = mixer(x, state, path)
    recorded = {k: v.clone() for k, v in handles.items()}
    for name, child in mixer.named_modules():
        if name.startswith("hook_"):
            child.remove_hooks()
    return out, final["h"], recorded


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_mixer_records_through_the_fused_gates_kernel(kernel, family, monkeypatch):
    mixer = _mixer(family)
    x = torch.randn(3, 31, 12) * 2
    h0 = torch.randn(3, 20)
    out_ref, h_ref, rec_ref = _run(mixer, x, "reference", h0)
    out, h, rec = _run(mixer, x, "fused", h0)
    label = "minGRU" if family == "mingru" else "minLSTM"
    assert mixer.last_kernel == f"compiled C++ {label} gates + linear scan (CPU, no grad)"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
    assert set(rec) == set(rec_ref) and {"hook_h", "hook_h_tilde", "hook_out"} <= set(rec)
    for name in rec_ref:
        torch.testing.assert_close(rec[name], rec_ref[name], rtol=1e-5, atol=1e-5)
    monkeypatch.setenv(cpu_compiled.DISABLE_ENV, "1")  # switched off: the PyTorch chunked scan, same numbers
    out_off, _, _ = _run(mixer, x, "fused", h0)
    assert mixer.last_kernel == "chunked linear scan"
    torch.testing.assert_close(out_off, out_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_an_edited_gate_feeds_the_compiled_scan(kernel, family):
    mixer = _mixer(family)
    x = torch.randn(2, 17, 12)
    gate = "z" if family == "mingru" else "f"

    def edit(value, hook):  # causal: zeroes the gate from position 5 on
        value = value.clone()
        value[:, 5:] = 0.0
        return value

    results = {}
    for path in ("reference", "fused"):
        mixer.hook_point(gate).add_hook(edit)
        with torch.no_grad():
            results[path] = mixer(x, None, path)
        mixer.hook_point(gate).remove_hooks()
    assert mixer.last_kernel == "compiled C++ linear scan (CPU, no grad)"  # gates first, then the scan
    torch.testing.assert_close(results["fused"][0], results["reference"][0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain, _ = mixer(x, None, "fused")
    assert not torch.allclose(plain[:, 5:], results["fused"][0][:, 5:])  # the edit took effect
    torch.testing.assert_close(plain[:, :5], results["fused"][0][:, :5], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_an_edited_state_replays_causally_after_the_fused_kernel(kernel, family):
    mixer = _mixer(family)
    x = torch.randn(2, 15, 12)

    def edit(value, hook):  # sets h at position 6; later positions must follow from it
        value = value.clone()
        value[:, 6] = 1.0
        return value

    results = {}
    for path in ("reference", "fused"):
        mixer.hook_h.add_hook(edit)
        with torch.no_grad():
            results[path] = mixer(x, None, path)
        mixer.hook_h.remove_hooks()
    assert mixer.last_kernel.startswith("compiled C++ min")  # gates unedited: the fused gates kernel
    torch.testing.assert_close(results["fused"][0], results["reference"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["fused"][1]["h"], results["reference"][1]["h"], rtol=1e-5, atol=1e-5)


def test_training_keeps_the_log_space_scan(kernel):
    mixer = _mixer("mingru")
    x = torch.randn(2, 9, 12)
    out, _ = mixer(x, None, "fused")  # parameters require grad
    assert "log-space" in mixer.last_kernel and out.requires_grad


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_run_with_cache_records_through_the_fused_gates_kernel(kernel, family):
    # TransformerLens' caching hooks are read-only, so a cached run keeps the one-pass kernel
    from workbench.models import HookedRecurrentLM

    torch.manual_seed(5)
    cfg = RecurrentConfig(family=family, n_layers=2, d_model=16, d_hidden=24, d_vocab=9)
    model = HookedRecurrentLM(cfg).eval()
    tokens = torch.randint(0, 9, (2, 40), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref_logits, ref_cache = model.run_with_cache(tokens, path="reference")
        logits, cache = model.run_with_cache(tokens, path="fused")
    assert all("gates + linear scan" in kernel for kernel in cache.metadata["kernels"].values())
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert set(cache) == set(ref_cache)
    for name in ref_cache:
        torch.testing.assert_close(cache[name], ref_cache[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gates_scan_at_extreme_values_and_nan(kernel, dtype):
    # saturated gates (±100), g's branch point (±0, tiny), and NaN, which must propagate as in torch
    values = [100.0, -100.0, 0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 3.0, -3.0, 0.5, -0.5, 90.0, -90.0, 2.0, -2.0, 7.0]
    pre_z = torch.tensor(values, dtype=dtype).repeat(3, 1).reshape(1, 3, -1)  # 17 channels: one masked tail lane
    pre_h = pre_z.flip(-1).clone()
    pre_z[0, 1, 4] = float("nan")
    z, h_tilde, h = compiled_mingru_gates_scan(pre_z.clone(), pre_h.clone())
    z_ref, h_tilde_ref, h_ref = _mingru_oracle(pre_z, pre_h, None)
    for got, want in ((z, z_ref), (h_tilde, h_tilde_ref), (h, h_ref)):
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
    assert torch.isnan(h[0, 1:, 4]).all() and not torch.isnan(h[0, 0]).any() and not torch.isnan(h[0, :, 3]).any()
    f, i, h_tilde, h = compiled_minlstm_gates_scan(pre_z.clone(), pre_h.clone(), pre_h.flip(1).clone())
    for got, want in zip((f, i, h_tilde, h), _minlstm_oracle(pre_z, pre_h, pre_h.flip(1), None), strict=True):
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
