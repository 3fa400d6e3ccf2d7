"""The chunked Mamba2 (scalar decay) and RWKV-4 (WKV) map kernels: every chunking gives the papers' map.

Kernels against the naive loop for chunks that do not divide the length, one position, one position
per chunk and one chunk for everything; float32 precision after long decays and with keys whose
exponential overflows; and, through the adapters, maps that do not depend on the chunk of positions
or on the channel chunks a small memory budget forces, and that still equal the layer's Jacobian."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.analysis.implicit_attention.kernel import (
    decay_attention_naive,
    exclusive_suffix_sum,
    scalar_chunk_size,
    scalar_decay_attention,
    sums_between_chunks,
)
from workbench.analysis.implicit_attention.rwkv import wkv_attention, wkv_attention_naive

CHUNKINGS = [(1, None), (1, 1), (2, 1), (9, 4), (33, 8), (50, None), (64, 16), (70, 32), (45, 100)]


def scalar_operands(L: int, n: int = 3, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    log_decay = -torch.rand(2, 3, L, generator=g, dtype=dtype) * 0.5  # [b, H, L]
    C = torch.randn(2, 3, L, n, generator=g, dtype=dtype)
    B = torch.randn(2, 3, L, n, generator=g, dtype=dtype)
    return log_decay, C, B


def wkv_operands(L: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k, u, log_den = (torch.randn(2, 3, L, generator=g, dtype=dtype) for _ in range(3))
    w, r = (torch.rand(2, 3, L, generator=g, dtype=dtype) for _ in range(2))
    return k, w, u, log_den, r


def test_helper_sums_are_direct_segment_sums():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0])
    assert exclusive_suffix_sum(x).tolist() == [14.0, 12.0, 8.0, 0.0]
    between = sums_between_chunks(x)  # [a, b]: Σ_{c=b+1..a−1}
    assert between[3, 0] == 6 and between[2, 0] == 2 and between[1, 0] == 0
    assert between[1, 1] == -math.inf and between[0, 3] == -math.inf


def test_scalar_chunk_size_is_32_or_the_length():
    assert [scalar_chunk_size(L) for L in (1, 20, 32, 1024, 100_000)] == [1, 20, 32, 32, 32]


@pytest.mark.parametrize("L, chunk", CHUNKINGS)
def test_chunked_scalar_decay_kernel_equals_the_naive_loop(L, chunk):
    log_decay, C, B = scalar_operands(L)
    fast = scalar_decay_attention(log_decay, C, B, chunk=chunk)
    assert fast.shape == (2, 3, L, L)
    assert (fast - decay_attention_naive(log_decay[..., None], C, B)).abs().max() < 1e-12
    assert torch.equal(fast.triu(1), torch.zeros_like(fast))


def test_scalar_decay_kernel_broadcasts_a_shared_read_out():
    log_decay, C, B = scalar_operands(40)
    shared = C[:, :1]  # [b, 1, L, n]: one C for every head
    fast = scalar_decay_attention(log_decay, shared, B, chunk=16)
    assert (fast - decay_attention_naive(log_decay[..., None], shared, B)).abs().max() < 1e-12


@pytest.mark.parametrize("L, chunk", CHUNKINGS)
def test_chunked_wkv_kernel_equals_the_naive_loop(L, chunk):
    args = wkv_operands(L)
    fast = wkv_attention(*args, chunk=chunk)
    assert fast.shape == (2, 3, L, L)
    assert (fast - wkv_attention_naive(*args)).abs().max() < 1e-12
    assert torch.equal(fast.triu(1), torch.zeros_like(fast))


def test_scalar_decay_float32_entries_stay_relatively_exact_after_long_decay():
    """Thousands of steps of decay: each entry's exponent is a direct sum, so float32 keeps its
    relative precision where e^{cumsum_t − cumsum_j} would cancel; beyond float range it is 0, not NaN."""
    L = 1024
    g = torch.Generator().manual_seed(0)
    log_decay = -torch.rand(1, 2, L, generator=g) * 0.2
    C, B = torch.rand(1, 2, L, 4, generator=g) + 0.5, torch.rand(1, 2, L, 4, generator=g) + 0.5
    fast = scalar_decay_attention(log_decay, C, B).double()
    exact = scalar_decay_attention(log_decay.double(), C.double(), B.double())
    near = torch.ones(L, L, dtype=torch.bool).tril() & ~torch.ones(L, L, dtype=torch.bool).tril(-64)
    rel = ((fast - exact).abs() / exact.abs().clamp_min(1e-30))[..., near]
    assert rel.max() < 1e-5
    strong = scalar_decay_attention(torch.full((1, 1, 3000), -0.5), torch.ones(1, 1, 3000, 1),
                                    torch.ones(1, 1, 3000, 1))
    assert torch.isfinite(strong).all() and strong[0, 0, -1, 0] == 0.0  # e^{-1500}
    assert torch.allclose(strong[0, 0, 2999, 2990], torch.tensor(math.exp(-4.5)), rtol=1e-6)


def test_wkv_float32_map_is_finite_and_as_exact_as_the_direct_form_where_exp_k_overflows():
    """Keys up to ±150 (e^150 overflows float32) with the layer's own denominators: each block's key
    factor is shifted by the chunk's largest key, so the chunked float32 map is finite and no further
    from float64 (same rounded inputs) than the direct one-chunk form."""
    L = 300
    g = torch.Generator().manual_seed(3)
    k = torch.randn(1, 4, L, generator=g, dtype=torch.float64) * 60
    w = torch.rand(1, 4, L, generator=g, dtype=torch.float64) * 0.3
    u = torch.randn(1, 4, 1, generator=g, dtype=torch.float64).expand(1, 4, L)
    r = torch.rand(1, 4, L, generator=g, dtype=torch.float64)
    # log D_t = log(Σ_{j<t} e^{k_j − Σ_{m=j+1..t−1} w_m} + e^{u + k_t}), the layer's denominator
    logits = wkv_attention(k, w, u, torch.zeros_like(k), torch.ones_like(k)).log()  # [b, d, t, j]
    args = [x.float() for x in (k, w, u, logits.logsumexp(-1), r)]
    exact = wkv_attention(*(x.double() for x in args))
    assert (exact.sum(-1) - args[-1].double()).abs().max() < 1e-4  # rows sum to r_t (log D rounded to float32)
    direct = (wkv_attention(*args, chunk=L).double() - exact).abs().max()
    for chunk in (None, 8):
        fast = wkv_attention(*args, chunk=chunk)
        assert k.abs().max() > 100 and torch.isfinite(fast).all()
        assert (fast.double() - exact).abs().max() <= max(float(direct), 1e-6)


@pytest.mark.parametrize("L", [1, 2, 3, 11])
def test_causal_conv_on_the_right_is_the_product_with_the_conv_matrix(L):
    """P · Conv with Conv[j, m] = w[k−1−(j−m)] for 0 ≤ j − m < k (causal depthwise conv), also when
    the text is shorter than the conv."""
    from workbench.analysis.implicit_attention.form import causal_conv_right

    g = torch.Generator().manual_seed(4)
    P = torch.randn(2, 3, 5, L, generator=g, dtype=torch.float64)  # [b, d, q, L]
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64)  # [d, k]
    conv = torch.zeros(3, L, L, dtype=torch.float64)  # [d, j, m]
    for j in range(L):
        for m in range(max(0, j - 3), j + 1):
            conv[:, j, m] = weight[:, 3 - (j - m)]
    assert (causal_conv_right(P, weight) - P @ conv).abs().max() < 1e-12


transformers = pytest.importorskip("transformers")

from workbench.analysis.implicit_attention import FAMILIES, implicit_attention  # noqa: E402
from workbench.analysis.implicit_attention.api import _plan, record  # noqa: E402
from workbench.analysis.implicit_attention.evaluation import jacobian  # noqa: E402

from .test_adapters import build, ids  # noqa: E402


@pytest.mark.parametrize("family, mode", [("mamba2", "exact"), ("mamba2", "paper"), ("rwkv", "exact")])
def test_adapter_maps_do_not_depend_on_the_chunk_of_positions(family, mode):
    model = build(family)
    tokens = ids(2, 45, seed=21)
    cache = record(model, tokens, [1], mode)
    maps = {chunk: implicit_attention(model, tokens, layer=1, mode=mode, cache=cache, chunk=chunk)
            for chunk in (None, 1, 7, 16, 64)}
    for chunk, att in maps.items():
        assert att.max_error() < 1e-10 * max(1.0, float(att.output.abs().max())), chunk
        assert (att.maps - maps[None].maps).abs().max() < 1e-12, chunk


@pytest.mark.parametrize("family", ["mamba2", "rwkv"])
def test_adapter_map_of_one_token_reproduces_it(family):
    model = build(family, torch.float32)
    att = implicit_attention(model, ids(2, 1, seed=22), layer=0)
    assert att.maps.shape[-2:] == (1, 1)
    assert att.max_error() < 1e-5 * max(1.0, float(att.output.abs().max()))


@pytest.mark.parametrize("family", ["mamba2", "rwkv"])
def test_chunked_adapter_map_equals_the_jacobian_with_gates_detached(family):
    model = build(family)
    tokens = ids(1, 21, seed=23)
    cache = record(model, tokens, [0], "exact")
    form = FAMILIES[family].form(model, cache, 0, "exact")
    att = implicit_attention(model, tokens, layer=0, cache=cache, chunk=4)  # 6 chunks, the last of 1
    assert (jacobian(form) - att.maps).abs().max() < 1e-12


@pytest.mark.parametrize("family", ["mamba2", "rwkv"])
def test_a_budget_that_forces_several_channel_chunks_gives_the_same_map(family):
    model = build(family, torch.float32)
    tokens = ids(2, 40, seed=24)
    cache = record(model, tokens, [1], "exact")
    full = implicit_attention(model, tokens, layer=1, cache=cache)
    form = FAMILIES[family].form(model, cache, 1, "exact")
    d = form.shape[1]
    budget = 1 << 20
    while _plan(form, 40, "none", budget, None) >= d:  # shrink until the channels come in chunks
        budget = int(budget * 0.8)
    steps = _plan(form, 40, "none", budget, None)
    assert 1 <= steps < d
    small = implicit_attention(model, tokens, layer=1, cache=cache, memory_budget_bytes=budget)
    assert (small.maps - full.maps).abs().max() < 1e-6
    assert small.max_error() < 1e-5 * max(1.0, float(small.output.abs().max()))


@pytest.mark.parametrize("family, mode", [("mamba2", "exact"), ("mamba2", "normed"), ("mamba", "exact")])
def test_composing_a_few_query_rows_at_a_time_gives_the_same_map(family, mode, monkeypatch):
    """`LinearForm.compose` overwrites α block of query rows by block (skip, col, conv, row in cache):
    blocks of 1 and of 3 rows (not dividing 40), full maps and chosen rows, equal one block for all."""
    import workbench.analysis.implicit_attention.form as form_module

    model = build(family)
    tokens = ids(2, 40, seed=25)
    cache = record(model, tokens, [1], mode)
    whole = implicit_attention(model, tokens, layer=1, mode=mode, cache=cache)
    row_bytes = 2 * FAMILIES[family].form(model, cache, 1, mode).shape[1] * 40 * 8  # one query row, all channels
    for rows in (1, 3):
        monkeypatch.setattr(form_module, "COMPOSE_BLOCK_BYTES", rows * row_bytes)
        att = implicit_attention(model, tokens, layer=1, mode=mode, cache=cache)
        assert (att.maps - whole.maps).abs().max() < 1e-12 and (att.bias - whole.bias).abs().max() < 1e-12
        some = implicit_attention(model, tokens, layer=1, mode=mode, cache=cache, queries=[39, 0, 17, 5])
        assert (some.maps - whole.maps[:, :, [39, 0, 17, 5]]).abs().max() < 1e-12
        assert att.max_error() < 1e-10 * max(1.0, float(att.output.abs().max()))
