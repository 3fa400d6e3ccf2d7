"""The memory guard counts a call's whole peak (recording, logits, work buffers, autograd graph) and
refuses before anything runs, with the parts and what to pass instead (issue 19)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import MemoryBudgetError
from workbench.models import set_memory_budget
from workbench.models.memory import GRADIENT_GRAPH_FACTOR, SMALL_CALL_BYTES

from .conftest import small_lm

HOOK = "blocks.1.mixer.hook_c"


@pytest.fixture
def budget():
    """Set the process budget for one test, and restore the default after it."""
    yield set_memory_budget
    set_memory_budget(None)


def _counting_hook(calls: list[str]):
    def hook(x, hook):
        calls.append(hook.name)
        return x
    return hook


def test_a_long_forward_is_refused_before_running_and_names_the_parts(budget):
    model = small_lm("lstm", dtype=torch.float32)
    tokens = torch.zeros(1, 200_000, dtype=torch.long)
    estimate = model.estimate_memory(tokens)
    assert estimate.total > SMALL_CALL_BYTES and "autograd graph" in estimate.parts
    budget(estimate.total - 1)
    calls: list[str] = []
    with pytest.raises(MemoryBudgetError) as info:
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", _counting_hook(calls))])
    assert calls == []  # refused before the embedding ran
    message = str(info.value)
    assert "the forward pass over 1 x 200,000 positions" in message
    assert "autograd graph" in message and "forward work buffers" in message
    assert "torch.no_grad()" in message and "model.score(tokens, window=" in message
    assert info.value.parts == estimate.parts and info.value.needed_bytes == estimate.total
    with pytest.raises(MemoryBudgetError):
        model(tokens)


def test_no_grad_drops_the_graph_from_the_estimate_and_the_call_then_runs(budget):
    model = small_lm("gru", dtype=torch.float32)
    tokens = torch.zeros(1, 50_000, dtype=torch.long)
    with_grad = model.estimate_memory(tokens)
    with torch.no_grad():
        without = model.estimate_memory(tokens)
    assert "autograd graph" not in without.parts and without.total < with_grad.total
    budget(without.total)
    with pytest.raises(MemoryBudgetError, match="torch.no_grad"):
        model(tokens)
    with torch.no_grad():
        assert model(tokens).shape == (1, 50_000, 7)
    for p in model.parameters():  # frozen parameters: no graph either
        p.requires_grad_(False)
    assert model(tokens[:, :10]).shape == (1, 10, 7)
    assert "autograd graph" not in model.estimate_memory(tokens).parts


def test_return_type_none_skips_the_logits_unless_they_are_hooked():
    model = small_lm("mingru")
    tokens = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.estimate_memory(tokens, return_type=None).parts["logits"] == 0
        assert model.estimate_memory(tokens).parts["logits"] == 2 * 9 * 7 * 8
        calls: list[str] = []
        assert model.run_with_hooks(tokens, return_type=None,
                                    fwd_hooks=[("blocks.0.hook_resid_post", _counting_hook(calls))]) is None
        assert calls == ["blocks.0.hook_resid_post"]
        out, state = model(tokens, return_type=None, return_state=True)
        assert out is None and len(state) == 2
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[("hook_logits", _counting_hook(calls))])
        assert calls[-1] == "hook_logits"  # hooked: computed for the hook
        _, cache = model.run_with_cache(tokens, return_type=None, names_filter="hook_logits")
        torch.testing.assert_close(cache["hook_logits"], model(tokens))


def test_run_with_cache_counts_the_recording_and_everything_else(budget):
    model = small_lm("s6", dtype=torch.float32, d_hidden=16, d_state=8)
    tokens = torch.zeros(4, 50, dtype=torch.long)
    name = "blocks.0.mixer.hook_state"
    with torch.no_grad():
        estimate = model.estimate_memory(tokens, names_filter=name)
        assert estimate.parts["recording (1 hook)"] == 4 * 50 * 16 * 8 * 4
        assert estimate.parts["logits"] == 4 * 50 * 7 * 4 and estimate.parts["forward work buffers"] > 0
        with pytest.raises(MemoryBudgetError, match=r"recording \(1 hook\)") as info:
            model.run_with_cache(tokens, names_filter=name, memory_budget_bytes=estimate.total - 1)
        assert f"{estimate.total:,} bytes" in str(info.value)
        _, cache = model.run_with_cache(tokens, names_filter=name, memory_budget_bytes=estimate.total)
    assert set(cache) == {name}
    # the same recording with autograd on asks for the graph as well
    assert model.estimate_memory(tokens, names_filter=name).total > estimate.total
    with pytest.raises(MemoryBudgetError, match="autograd graph"):
        model.run_with_cache(tokens, names_filter=name, memory_budget_bytes=estimate.total)


def test_gradient_recording_asks_for_values_gradients_and_graph():
    model = small_lm("lstm")
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(8))
    estimate = model.estimate_memory(tokens, names_filter=HOOK, incl_bwd=True, return_type="loss")
    every = model.recording_bytes(2, 6, list(model.hook_dict)) - model.recording_bytes(2, 0, list(model.hook_dict))
    assert estimate.parts["recorded gradients"] == model.recording_bytes(2, 6, [HOOK])
    assert estimate.parts["autograd graph and gradient probes"] == GRADIENT_GRAPH_FACTOR * every


def test_advice_follows_the_large_part(budget):
    model = small_lm("lstm", dtype=torch.float32, d_vocab=5000)  # logits dominate
    tokens = torch.zeros(1, 20_000, dtype=torch.long)
    with torch.no_grad():
        estimate = model.estimate_memory(tokens, names_filter=[])
        budget(estimate.total // 2)
        with pytest.raises(MemoryBudgetError, match="return_type=None") as info:
            model(tokens)
    assert "names_filter" not in str(info.value) and "no_grad" not in str(info.value)
    recorder = small_lm("lstm", dtype=torch.float32)  # every hook recorded: the recording dominates
    with torch.no_grad(), pytest.raises(MemoryBudgetError, match=r"names_filter=\.\.\..*names_filter=\.\.\., sink="):
        recorder.run_with_cache(tokens, memory_budget_bytes=1_000_000)


def test_generation_and_small_calls_do_not_consult_the_budget(budget):
    model = small_lm("gru")
    budget(1)  # any call that asked would be refused
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, greedy=True)
    assert out.shape == (1, 7)


def test_attention_patterns_count_as_quadratic_in_length(budget):
    """A hook naming `key_pos` (the keys an attention query reads) grows with pos²: the hybrid's patterns
    enter the estimate as scores and softmax per attention layer, recorded or not, and the streaming
    window is the largest whose quadratic estimate fits."""
    from tests.adapters.conftest import tiny
    from workbench.adapters import from_transformers
    from workbench.models.memory import QUADRATIC_COPIES, _model_widths, fitting_window

    model = from_transformers(tiny("qwen3_next"))  # one attention layer, 4 query heads, float32
    heads, attention_layers = model.sizes["n_heads"], len(model.blocks) - len(model.recurrent_layers)
    assert _model_widths(model).quadratic == attention_layers * heads * 4
    assert _model_widths(small_lm("lstm", dtype=torch.float32)).quadratic == 0
    with torch.no_grad():
        short, long = (model.estimate_memory(torch.zeros(2, n, dtype=torch.long)) for n in (3000, 6000))
        part = "attention scores and patterns"
        assert short.parts[part] == QUADRATIC_COPIES * 2 * 3000 ** 2 * heads * 4 * attention_layers
        assert long.parts[part] == 4 * short.parts[part]
        recorded = model.estimate_memory(torch.zeros(2, 3000, dtype=torch.long),
                                         names_filter=lambda name: name.endswith("hook_pattern"))
        assert recorded.parts["recording (1 hook)"] == short.parts[part] // QUADRATIC_COPIES
        budget(short.total)
        with pytest.raises(MemoryBudgetError, match="attention scores and patterns"):
            model(torch.zeros(2, 6000, dtype=torch.long))
    window = fitting_window(model, 2, short.total)
    fits = [model.estimate_memory(torch.zeros(2, n, dtype=torch.long), grad=False, return_type="loss").total
            <= short.total for n in (window, window + 1)]
    assert fits == [True, False] and window < 6000
