"""The implicit_attention API: aggregation on the fly, rows, channel subsets, memory and bad input."""

import pytest
import torch

from workbench.analysis.implicit_attention import implicit_attention, implicit_attention_layers
from workbench.analysis.implicit_attention.api import record
from workbench.errors import EmptyInputError, MemoryBudgetError, UnknownHookError
from workbench.models import HookedRecurrentLM, RecurrentConfig


@pytest.fixture(scope="module")
def s6():
    torch.manual_seed(0)
    return HookedRecurrentLM(RecurrentConfig(family="s6", n_layers=2, d_model=16, d_hidden=24,
                                             d_vocab=13, d_state=4))


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 13, (2, 60), generator=torch.Generator().manual_seed(1))


def test_aggregations_equal_reductions_of_the_per_channel_maps(s6, tokens):
    full = implicit_attention(s6, tokens, layer=1)
    per = full.maps  # [b, d, L, L]
    budget = 1_000_000  # forces many channel chunks
    mean = implicit_attention(s6, tokens, layer=1, aggregate="mean", memory_budget_bytes=budget)
    assert mean.maps.shape == (2, 60, 60)
    assert torch.allclose(mean.maps, per.mean(1), atol=1e-6)
    absolute = implicit_attention(s6, tokens, layer=1, aggregate="abs_mean", memory_budget_bytes=budget)
    assert torch.allclose(absolute.maps, per.abs().mean(1), atol=1e-6)
    norm = implicit_attention(s6, tokens, layer=1, aggregate="norm", memory_budget_bytes=budget)
    assert torch.allclose(norm.maps, (per * full.value[:, :, None, :]).norm(dim=1), atol=1e-5)
    with pytest.raises(ValueError, match="cannot reproduce"):
        mean.reproduce()


def test_rows_and_channel_subsets_are_slices_of_the_full_map(s6, tokens):
    full = implicit_attention(s6, tokens, layer=0)
    rows = implicit_attention(s6, tokens, layer=0, queries=[0, 30, -1])
    assert rows.maps.shape == (2, 24, 3, 60)
    assert torch.allclose(rows.maps, full.maps[:, :, [0, 30, 59]], atol=1e-6)
    assert rows.max_error() < 1e-5  # rows reproduce their outputs too
    some = implicit_attention(s6, tokens, layer=0, channels=[3, 7])
    assert torch.allclose(some.maps, full.maps[:, [3, 7]], atol=1e-6) and some.max_error() < 1e-5


def test_layers_share_one_forward_pass(s6, tokens):
    both = implicit_attention_layers(s6, tokens, aggregate="mean")
    assert [a.layer for a in both] == [0, 1] and both[1].maps.shape == (2, 60, 60)


def test_a_map_over_the_budget_is_refused_with_the_bytes(s6, tokens):
    cache = record(s6, tokens, [0], "exact")  # the budget below is for the maps, not the forward
    with pytest.raises(MemoryBudgetError) as info:
        implicit_attention(s6, tokens, layer=0, cache=cache, memory_budget_bytes=100_000)
    message = str(info.value)
    assert "24 channels x 60 queries x 60 positions" in message and "aggregate" in message
    assert info.value.needed_bytes > 2 * 24 * 60 * 60 * 4  # at least the maps themselves
    # aggregating or asking for rows fits the same budget
    assert implicit_attention(s6, tokens, layer=0, cache=cache, queries=[5],
                              memory_budget_bytes=100_000).maps.shape == (2, 24, 1, 60)
    with pytest.raises(MemoryBudgetError, match="forward work buffers"):  # recording counts the forward
        implicit_attention(s6, tokens, layer=0, memory_budget_bytes=100_000)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layer": 5}, UnknownHookError, "the model has 2 layer"),
    ({"mode": "fast"}, ValueError, "exact, paper"),
    ({"aggregate": "meen"}, ValueError, "did you mean 'mean'"),
    ({"channels": [24]}, IndexError, "24 d_inner channels"),
    ({"queries": [60]}, IndexError, "60 positions"),
    ({"channels": []}, ValueError, "no channels"),
])
def test_bad_arguments_raise_with_the_reason(s6, tokens, kwargs, error, match):
    with pytest.raises(error, match=match):
        implicit_attention(s6, tokens, **kwargs)


def test_paper_mode_exists_only_where_the_papers_drop_something():
    lstm = HookedRecurrentLM(RecurrentConfig(family="lstm", n_layers=1, d_model=8, d_hidden=8, d_vocab=5))
    with pytest.raises(ValueError, match="choose one of exact"):
        implicit_attention(lstm, torch.tensor([[1, 2]]), mode="paper")


def test_empty_input_and_unsupported_families_raise(s6):
    with pytest.raises(EmptyInputError):
        implicit_attention(s6, torch.zeros(1, 0, dtype=torch.long))
    elman = HookedRecurrentLM(RecurrentConfig(family="elman", n_layers=1, d_model=8, d_hidden=8, d_vocab=5))
    with pytest.raises(NotImplementedError, match="supported families: s6, .*mamba2, rwkv, recurrent_gemma, mingru"):
        implicit_attention(elman, torch.tensor([[1, 2]]))
