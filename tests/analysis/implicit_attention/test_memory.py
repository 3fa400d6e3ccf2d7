"""The memory estimate the budget uses (`attention_bytes`) against what one call really allocates.

The peak is measured with torch's profiler (`profile_memory=True`): it reports every allocation and
free of torch's CPU allocator, op-internal temporaries included, with its exact size, so a running
sum over the events in time order gives the peak bytes of tensors alive at once during the call
(not counting what was allocated before it). Unlike the resident set it does not depend on what the
C allocator keeps from earlier calls, page granularity or other threads, so the test is deterministic.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from workbench.analysis.implicit_attention import FAMILIES, implicit_attention
from workbench.analysis.implicit_attention.api import _plan, attend, attention_bytes, record
from workbench.errors import MemoryBudgetError
from workbench.models import HookedRecurrentLM, RecurrentConfig

ADAPTERS = ("mamba", "mamba2", "rwkv", "recurrent_gemma")
CASES = [("s6", 0), ("mingru", 0), ("minlstm", 0), ("lstm", 0), ("gru", 0), ("mamba", 0), ("mamba2", 0),
         ("rwkv", 0), ("recurrent_gemma", 0), ("recurrent_gemma", 2)]  # Griffin layer 2: local attention
NO_BUDGET = 1 << 40


def peak_allocated(fn) -> int:
    """Peak bytes of tensors allocated by `fn()` and alive at once (see module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    assert events, "the profiler reported no allocations"
    alive = peak = 0
    for event in events:
        alive += event.nbytes()  # > 0 allocated, < 0 freed
        peak = max(peak, alive)
    return peak


_MODELS: dict[str, object] = {}


def model_of(family: str):
    """A tiny float32 model of `family` (16 channels for our families; the adapters' test configs)."""
    if family not in _MODELS:
        if family in ADAPTERS:
            if importlib.util.find_spec("transformers") is None:
                pytest.skip("transformers is not installed")
            from .test_adapters import build

            _MODELS[family] = build(family, torch.float32)
        else:
            torch.manual_seed(0)
            _MODELS[family] = HookedRecurrentLM(RecurrentConfig(family=family, n_layers=1, d_model=16, d_hidden=16,
                                                                d_vocab=13, d_state=16))
    return _MODELS[family]


def form_of(family: str, layer: int, length: int, batch: int = 1, **record_kwargs):
    model = model_of(family)
    tokens = torch.randint(0, 13, (batch, length), generator=torch.Generator().manual_seed(3))
    cache = record(model, tokens, [layer], "exact", **record_kwargs)
    return FAMILIES[model.cfg.family].form(model, cache, layer, "exact")


def estimate(form, queries: int, aggregate: str, budget: int = NO_BUDGET) -> tuple[int, int]:
    """(the bytes `attend` plans for: result + one chunk's work, channels per chunk)."""
    b, d, L = form.shape
    step = _plan(form, queries, aggregate, budget, None)
    held, work = attention_bytes(b, d, queries, L, form.n, form.value.element_size(), aggregate, step, None,
                                 core_bytes=form.work_bytes(b * step, queries, None),
                                 compose_bytes=form.compose_bytes(b * step, queries))
    return held + work, step


@pytest.mark.parametrize("family, layer", CASES)
def test_estimate_bounds_the_peak_and_is_within_2x_where_the_map_dominates(family, layer):
    form = form_of(family, layer, 1024)
    assert form.shape[1] >= 16
    for aggregate in ("none", "mean", "norm"):
        planned, _ = estimate(form, 1024, aggregate)
        peak = peak_allocated(lambda agg=aggregate: attend(form, aggregate=agg, chunk=None,
                                                           memory_budget_bytes=NO_BUDGET))
        assert peak <= planned, (aggregate, peak, planned)
        assert planned <= 2 * peak, (aggregate, peak, planned)


@pytest.mark.parametrize("family, layer", [("s6", 0), ("mamba2", 0), ("rwkv", 0), ("recurrent_gemma", 2)])
def test_estimate_bounds_the_peak_for_rows_chunks_and_an_initial_state(family, layer):
    model = model_of(family)
    with torch.no_grad():
        _, states = model(torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(5)),
                          return_state=True)
    form = form_of(family, layer, 200, batch=2, initial_state=states)
    b, d, L = form.shape
    for aggregate in ("none", "mean", "norm", "abs_mean"):
        for queries in (None, torch.tensor([0, 77, 199])):
            q = L if queries is None else len(queries)
            one_chunk, _ = estimate(form, q, aggregate)
            budget = one_chunk // 3  # several channel chunks, down to one channel where it must
            try:
                planned, step = estimate(form, q, aggregate, budget)
            except MemoryBudgetError:
                planned, step = one_chunk, d
                budget = NO_BUDGET
            peak = peak_allocated(lambda a=aggregate, qs=queries, bu=budget: attend(
                form, queries=qs, aggregate=a, chunk=None, memory_budget_bytes=bu))
            assert peak <= planned, (aggregate, q, step, peak, planned)


def test_a_request_the_old_estimate_refused_now_runs_within_its_budget():
    """The old estimate counted four copies of every chunk's map for composing; composing now works
    on a block of rows in place, so a budget between the two estimates is enough, measured."""
    model = model_of("mingru")
    tokens = torch.randint(0, 13, (1, 256), generator=torch.Generator().manual_seed(4))
    form = FAMILIES["mingru"].form(model, record(model, tokens, [0], "exact"), 0, "exact")
    b, d, L = form.shape
    element = form.value.element_size()
    held, work = attention_bytes(b, d, L, L, form.n, element, "mean", 1, None,
                                 core_bytes=form.work_bytes(b, L, None), compose_bytes=form.compose_bytes(b, L))
    budget = held + work
    old = held + form.work_bytes(b, L, None) + element * b * L * (L + 8) * 4  # before: compose as 4 maps
    assert old > budget * 1.2
    peak = peak_allocated(lambda: implicit_attention(model, tokens, layer=0, aggregate="mean",
                                                     memory_budget_bytes=budget))
    assert peak <= budget
    att = implicit_attention(model, tokens, layer=0, aggregate="mean", memory_budget_bytes=budget)
    full = implicit_attention(model, tokens, layer=0)
    assert torch.allclose(att.maps, full.maps.mean(1), atol=1e-6)
    with pytest.raises(MemoryBudgetError):
        implicit_attention(model, tokens, layer=0, aggregate="mean", memory_budget_bytes=held)


def test_mamba2_heads_spread_while_composing_equal_the_map_spread_by_core():
    """Mamba2's α is computed per head; `compose(per_head=True)` spreads it over the channels itself
    (into `out` when given: the API's slice of all channels' maps, so a chunk needs no copy)."""
    pytest.importorskip("transformers")
    from .test_adapters import build, ids

    model = build("mamba2")
    tokens = ids(2, 40, seed=26)
    form = FAMILIES["mamba2"].form(model, record(model, tokens, [1], "exact"), 1, "exact")
    q = torch.arange(40)
    for part in (form, form.channels(torch.tensor([9, 0, 31, 8, 17]))):  # heads out of order
        maps, bias = part.compose(part.core(None, None), q)
        heads = part.core(None, None, spread=False)
        assert heads.shape[1] < part.shape[1]
        folded, folded_bias = part.compose(heads, q, per_head=True)
        assert torch.equal(folded, maps) and torch.equal(folded_bias, bias)
        out = torch.full_like(maps, float("nan"))
        into, _ = part.compose(part.core(None, None, spread=False), q, per_head=True, out=out)
        assert into.data_ptr() == out.data_ptr() and torch.equal(out, maps)
        rows = torch.tensor([3, 39])
        row_maps, _ = part.compose(part.core(rows, None, spread=False), rows, per_head=True)
        assert (row_maps - maps[:, :, rows]).abs().max() < 1e-10
    one = form.channels(torch.tensor([5]))  # one channel of one head: α is already its map
    with pytest.raises(ValueError, match="out="):
        one.compose(one.core(None, None, spread=False), q, per_head=True, out=torch.empty(2, 1, 40, 40))
    out = torch.full((2, 1, 40, 40), float("nan"), dtype=torch.float64)
    into, _ = one.compose(one.core(None, None, spread=False), q, per_head=True, out=out)
    assert into.data_ptr() == out.data_ptr() and torch.equal(out, one.compose(one.core(None, None), q)[0])
    full = attend(form, aggregate="none", chunk=None, memory_budget_bytes=NO_BUDGET)[0]
    b, d, L = form.shape
    held, work = attention_bytes(b, d, L, L, form.n, form.value.element_size(), "none", 1, None,
                                 core_bytes=form.work_bytes(b, L, None), compose_bytes=form.compose_bytes(b, L))
    assert _plan(form, L, "none", held + work, None) == 1
    chunked = attend(form, aggregate="none", chunk=None, memory_budget_bytes=held + work)[0]
    assert torch.equal(chunked, full)  # one channel per chunk, each spread into the result
