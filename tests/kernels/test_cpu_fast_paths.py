"""CPU fast paths: recursive chunk carry of linear_scan, huge-page recording buffers, minGRU dispatch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import buffers, linear_scan, linear_scan_reference, selective_scan, selective_scan_reference
from workbench.kernels.buffers import recording_buffer
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 2),
    pos=st.one_of(st.just(1), st.integers(1, 1500)),
    width=st.sampled_from([1, 3, 8]),
    chunk_size=st.integers(2, 6),
    tiny=st.booleans(),
)
def test_linear_scan_with_recursive_carry_matches_reference(seed, batch, pos, width, chunk_size, tiny):
    """Many chunks (pos / chunk >= 2 * chunk) carry across chunks by a nested scan; lengths need not
    divide by the chunk size; a down to 1e-30 makes chunk products underflow to zero."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, pos, width, generator=gen)
    if tiny:
        a = a * torch.where(torch.rand(batch, pos, width, generator=gen) < 0.3, 1e-30, 1.0)
    b = torch.randn(batch, pos, width, generator=gen)
    h0 = torch.randn(batch, width, generator=gen)
    expected = linear_scan_reference(a, b, h0)
    for grad in (False, True):
        inputs = [t.clone().requires_grad_(grad) for t in (a, b, h0)]
        got = linear_scan(*inputs, chunk_size=chunk_size)
        torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)


def test_recording_buffer_large_and_small():
    small = recording_buffer((3, 4), torch.float32, "cpu")
    big = recording_buffer((4, 1 << 20), torch.float32, "cpu")  # 16 MiB: huge-page mapping where available
    assert small.shape == (3, 4) and big.shape == (4, 1 << 20) and big.is_contiguous()
    big.fill_(2.0)
    row = big[1]
    del big
    assert float(row.sum()) == 2.0 * (1 << 20)  # a view keeps the mapping alive
    f64 = recording_buffer((2, 1 << 20), torch.float64, "cpu")
    assert f64.dtype == torch.float64 and f64.element_size() == 8


def test_selective_scan_states_in_huge_page_buffers_match_reference(monkeypatch):
    monkeypatch.setattr(buffers, "HUGE_PAGE_MIN_BYTES", 0)  # every buffer through the mmap path
    gen = torch.Generator().manual_seed(5)
    batch, pos, d, n = 2, 37, 6, 4
    u, delta = torch.randn(batch, pos, d, generator=gen), torch.rand(batch, pos, d, generator=gen)
    A, D = -torch.rand(d, n, generator=gen), torch.randn(d, generator=gen)
    B, C = torch.randn(batch, pos, n, generator=gen), torch.randn(batch, pos, n, generator=gen)
    y, states = selective_scan(u, delta, A, B, C, D, return_states=True, chunk_size=8)
    y_ref, states_ref = selective_scan_reference(u, delta, A, B, C, D, return_states=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, states_ref, rtol=1e-5, atol=1e-5)


def test_mingru_records_with_the_linear_scan_and_trains_in_log_space(monkeypatch):
    monkeypatch.setenv("WORKBENCH_NO_COMPILED", "1")  # the PyTorch paths (the compiled one: test_cpu_compiled_scan)
    torch.manual_seed(0)
    cfg = RecurrentConfig(family="mingru", n_layers=1, d_model=6, d_hidden=5, d_vocab=2)
    mixer = MIXERS["mingru"](cfg)
    x = torch.randn(2, 40, 6)
    with torch.no_grad():
        recorded, _ = mixer(x, None, "fused")
    assert mixer.last_kernel == "chunked linear scan"
    trained, _ = mixer(x, None, "fused")
    assert "log-space" in mixer.last_kernel
    reference, _ = mixer(x, None, "reference")
    torch.testing.assert_close(recorded, reference.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trained.detach(), reference.detach(), rtol=1e-5, atol=1e-5)
