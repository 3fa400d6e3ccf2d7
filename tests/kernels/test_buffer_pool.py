"""The recording-buffer pool: freed large buffers are reused, never while any view is alive, within the
byte limit; `buffered_linear` gives F.linear's numbers; a pooled S6 recording stays intact."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

import workbench
from workbench.kernels import buffers
from workbench.kernels.buffers import (
    POOL_ENV,
    buffered_linear,
    pool_limit_bytes,
    pooled_bytes,
    recording_buffer,
    release_recording_buffers,
)
from workbench.kernels.cpu_compiled import compiled_kernels_available
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook

BIG = (4, 1 << 20)  # 16 MiB of float32: above HUGE_PAGE_MIN_BYTES

pytestmark = pytest.mark.skipif(not buffers._HUGE_PAGES, reason="no madvise(MADV_HUGEPAGE) on this system")


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.delenv(POOL_ENV, raising=False)
    release_recording_buffers()
    yield
    gc.collect()
    release_recording_buffers()


def test_a_freed_buffer_is_reused_only_after_its_last_view_dies():
    first = recording_buffer(BIG, torch.float32, "cpu")
    address = first.data_ptr()
    row = first[1]
    del first
    assert pooled_bytes() == 0  # the view still holds the mapping
    other = recording_buffer(BIG, torch.float32, "cpu")
    assert other.data_ptr() != address
    del row
    assert 16 << 20 <= pooled_bytes() < (16 << 20) + 4096  # the data may start up to 4 KiB in
    again = recording_buffer(BIG, torch.float32, "cpu")
    assert again.data_ptr() == address and pooled_bytes() == 0
    del other, again
    assert 32 << 20 <= workbench.release_recording_buffers() < (32 << 20) + 8192 and pooled_bytes() == 0


def test_equal_buffers_start_at_staggered_addresses():
    """Buffers of one size must not all sit a power of two apart (the same cache sets for every stream)."""
    live = [recording_buffer(BIG, torch.float32, "cpu") for _ in range(4)]
    assert len({t.data_ptr() % 4096 for t in live}) == 4
    assert all(t.data_ptr() % 64 == 0 for t in live)  # whole cache lines, aligned for any vector width


def test_a_buffer_above_the_huge_page_size_is_populated_and_pooled():
    shape = ((buffers.HUGE_PAGE_MAX_BYTES >> 2) + 1000,)  # just over the cap, in float32
    big = recording_buffer(shape, torch.float32, "cpu")
    big.fill_(3.0)
    assert float(big[-1]) == 3.0 and big.numel() == shape[0]
    address = big.data_ptr()
    del big
    again = recording_buffer(shape, torch.float32, "cpu")
    assert again.data_ptr() == address


def test_pool_picks_a_close_size_and_respects_its_limit(monkeypatch):
    big = recording_buffer((4, 4 << 20), torch.float32, "cpu")  # 64 MiB
    del big
    small = recording_buffer(BIG, torch.float32, "cpu")  # 16 MiB: the 64 MiB mapping is too big to lend
    assert pooled_bytes() >= 64 << 20
    del small
    monkeypatch.setenv(POOL_ENV, "20")  # 20 MiB: the next freed mapping evicts the oldest
    assert pool_limit_bytes() == 20 << 20
    again = recording_buffer(BIG, torch.float32, "cpu")
    del again
    assert pooled_bytes() <= 20 << 20
    monkeypatch.setenv(POOL_ENV, "0")
    release_recording_buffers()
    off = recording_buffer(BIG, torch.float32, "cpu")
    del off
    assert pooled_bytes() == 0
    monkeypatch.setenv(POOL_ENV, "lots")
    with pytest.raises(ValueError, match=POOL_ENV):
        pool_limit_bytes()


def test_buffered_linear_gives_f_linear():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 700, 96, generator=gen)  # output [3, 700, 2048] floats: 16.4 MiB, pooled
    weight, bias = torch.randn(2048, 96, generator=gen), torch.randn(2048, generator=gen)
    with torch.no_grad():
        # float32 rounding only: the BLAS may pick other kernels for a page-aligned output
        torch.testing.assert_close(buffered_linear(x, weight, bias), F.linear(x, weight, bias), rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(buffered_linear(x, weight), F.linear(x, weight), rtol=2e-6, atol=2e-6)
        small = x[:, :2]  # below the pooling size: a plain tensor
        torch.testing.assert_close(buffered_linear(small, weight, bias), F.linear(small, weight, bias))
    with pytest.raises(RuntimeError, match="autograd"):
        buffered_linear(x, weight.requires_grad_())


@pytest.mark.skipif(not compiled_kernels_available(), reason="compiled CPU kernels unavailable")
def test_pooled_s6_recordings_do_not_share_memory():
    torch.manual_seed(0)
    cfg = RecurrentConfig(family="s6", n_layers=1, d_model=64, d_hidden=2048, d_vocab=2, d_state=16)
    mixer = MIXERS["s6"](cfg).eval()
    store: dict[str, torch.Tensor] = {}
    record_every_hook(mixer, store)
    x = torch.randn(2, 512, 64)  # [2, 512, 2048] activations: 8 MiB each, pooled
    with torch.no_grad():
        out_first, _ = mixer(x, None, "fused")
    first = dict(store)
    kept = {name: t.clone() for name, t in first.items()}
    store.clear()
    with torch.no_grad():
        mixer(x.flip(1), None, "fused")  # a second recording while the first is alive
        reference, _ = mixer(x, None, "reference")
    assert mixer.last_kernel is not None
    for name, t in first.items():
        assert torch.equal(t, kept[name]), name
    torch.testing.assert_close(out_first, reference, rtol=1e-5, atol=1e-5)
    del first, kept, out_first
    store.clear()
    gc.collect()
    assert pooled_bytes() > 0  # the first recording's buffers came back for reuse


def test_pooled_memory_counts_as_free_for_the_recording_budget(monkeypatch):
    from workbench.models import cache

    before = cache.free_memory_bytes("cpu")
    monkeypatch.setattr(cache, "pooled_bytes", lambda: 1 << 40)
    assert cache.free_memory_bytes("cpu") >= (1 << 40) + before // 2
