"""The segment-sum kernel against the papers' naive loop: values, rows, chunking, underflow."""

import math

import pytest
import torch

from workbench.analysis.implicit_attention import (
    decay_attention,
    decay_attention_naive,
    decay_attention_row,
    segsum,
)
from workbench.analysis.implicit_attention.kernel import chunk_size, scalar_decay_attention


def operands(L: int, n: int, scale: float = 0.5, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    log_decay = -torch.rand(2, 3, L, n, generator=g, dtype=dtype) * scale
    C = torch.randn(2, 1, L, n, generator=g, dtype=dtype)
    B = torch.randn(2, 3, L, n, generator=g, dtype=dtype)
    return log_decay, C, B


def test_segsum_sums_exactly_the_segment():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0])
    out = segsum(x)
    assert out[3, 0] == 14 and out[2, 1] == 4 and out[1, 1] == 0
    assert out[0, 1] == -math.inf


@pytest.mark.parametrize("L, n, chunk", [(1, 1, None), (7, 3, None), (37, 4, 8), (64, 2, 16),
                                         (65, 1, None), (100, 5, 32)])
def test_chunked_kernel_equals_the_naive_loop(L, n, chunk):
    log_decay, C, B = operands(L, n)
    fast = decay_attention(log_decay, C, B, chunk=chunk)
    assert (fast - decay_attention_naive(log_decay, C, B)).abs().max() < 1e-12


def test_rows_on_demand_equal_the_rows_of_the_full_map():
    log_decay, C, B = operands(90, 4)
    full = decay_attention(log_decay, C, B)
    for t in (0, 1, 45, 89):
        assert (decay_attention_row(log_decay, C, B, t) - full[..., t, :]).abs().max() < 1e-13
    with pytest.raises(IndexError, match="query position 90"):
        decay_attention_row(log_decay, C, B, 90)


def test_long_strongly_decaying_sequences_neither_underflow_to_nan_nor_lose_the_diagonal():
    """Products of thousands of decays are ~0 but never 0/0; near-diagonal entries stay exact."""
    L = 3000
    log_decay = torch.full((1, 1, L, 1), -0.5)
    C, B = torch.ones(1, 1, L, 1), torch.ones(1, 1, L, 1)
    alpha = decay_attention(log_decay, C, B)
    assert torch.isfinite(alpha).all()
    assert alpha[0, 0, L - 1, 0] == 0.0  # e^{-1500}: below float range, exactly zero
    assert torch.allclose(alpha[0, 0, L - 1, L - 2], torch.tensor(math.exp(-0.5)), rtol=1e-6)
    assert torch.allclose(alpha[0, 0, 2999, 2990], torch.tensor(math.exp(-4.5)), rtol=1e-6)


def test_float32_entries_stay_relatively_exact_after_long_cumulative_decay():
    """A closed form via one long cumulative sum would cancel here; segment sums do not."""
    L = 1024
    g = torch.Generator().manual_seed(0)
    log_decay = -torch.rand(1, 2, L, 3, generator=g) * 0.2
    C, B = torch.ones(1, 1, L, 3), torch.ones(1, 2, L, 3)
    fast = decay_attention(log_decay, C, B).double()
    exact = decay_attention(log_decay.double(), C.double(), B.double())
    near = torch.ones(L, L, dtype=torch.bool).tril() & ~torch.ones(L, L, dtype=torch.bool).tril(-8)
    rel = ((fast - exact).abs() / exact.abs().clamp_min(1e-30))[..., near]
    assert rel.max() < 1e-5


def test_chunk_size_is_a_power_of_two_near_the_square_root():
    assert [chunk_size(L) for L in (1, 48, 256, 1024, 100_000)] == [8, 8, 16, 16, 32]


@pytest.mark.parametrize("L, n", [(1, 4), (9, 1), (50, 6)])
def test_scalar_decay_kernel_and_rows_equal_the_naive_loop(L, n):
    """Mamba2's per-head scalar decay: (C Bᵀ) ⊙ exp(segsum) is the papers' α with one decay per step."""
    g = torch.Generator().manual_seed(1)
    log_decay = -torch.rand(2, 3, L, 1, generator=g, dtype=torch.float64) * 0.5
    C, B = (torch.randn(2, 3, L, n, generator=g, dtype=torch.float64) for _ in range(2))
    naive = decay_attention_naive(log_decay, C, B)
    fast = scalar_decay_attention(log_decay[..., 0], C, B)
    assert (fast - naive).abs().max() < 1e-12
    assert torch.equal(fast.triu(1), torch.zeros_like(fast))
    for t in {0, L // 2, L - 1}:
        assert (decay_attention_row(log_decay, C, B, t) - naive[..., t, :]).abs().max() < 1e-12


def test_wkv_kernel_and_rows_equal_the_naive_loop():
    """RWKV-4's log-space map: r_t e^{k_j − Σ_{m=j+1..t−1} w_m − log D_t}, bonus u on the diagonal."""
    from workbench.analysis.implicit_attention.rwkv import wkv_attention, wkv_attention_naive, wkv_attention_row

    g = torch.Generator().manual_seed(2)
    L = 40
    k, u = (torch.randn(2, 3, L, generator=g, dtype=torch.float64) for _ in range(2))
    w, r = (torch.rand(2, 3, L, generator=g, dtype=torch.float64) for _ in range(2))
    log_den = torch.randn(2, 3, L, generator=g, dtype=torch.float64)
    naive = wkv_attention_naive(k, w, u, log_den, r)
    fast = wkv_attention(k, w, u, log_den, r)
    assert (fast - naive).abs().max() < 1e-12
    assert torch.equal(fast.triu(1), torch.zeros_like(fast))
    for t in (0, 1, 20, L - 1):
        assert (wkv_attention_row(k, w, u, log_den, r, t) - naive[..., t, :]).abs().max() < 1e-12
