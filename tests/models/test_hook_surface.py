"""Hook names, shapes and the TransformerLens surface (run_with_cache, run_with_hooks, filters)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import EmptyInputError, MemoryBudgetError, UnknownHookError
from workbench.models import HookedRecurrentSeq2Seq, RecurrentConfig

from .conftest import small_lm

DESIGN_QUANTITIES = {
    "elman": {"pre", "h"},
    "lstm": {"i", "f", "g", "o", "c", "h"},
    "gru": {"r", "z", "n", "h"},
    "mingru": {"z", "h_tilde", "h"},
    "minlstm": {"f", "i", "h_tilde", "h"},
    "s6": {"x", "conv", "delta", "B", "C", "state", "y", "gate", "out"},
}


def test_design_table_quantities_are_hooked_at_every_layer(family):
    model = small_lm(family)
    for layer in range(model.cfg.n_layers):
        for quantity in DESIGN_QUANTITIES[family]:
            assert f"blocks.{layer}.mixer.hook_{quantity}" in model.hook_dict
        assert f"blocks.{layer}.hook_resid_pre" in model.hook_dict
        assert f"blocks.{layer}.hook_resid_post" in model.hook_dict
    for name in ("hook_embed", "ln_final.hook_normalized", "hook_logits"):
        assert name in model.hook_dict


def test_hook_table_shapes_match_recorded_shapes(family):
    model = small_lm(family)
    batch, pos = 3, 5
    _, cache = model.run_with_cache(torch.zeros(batch, pos, dtype=torch.long))
    rows = model.hook_table(batch=batch, pos=pos)
    assert {r["name"] for r in rows} == set(model.hook_dict) == set(cache)
    for row in rows:
        assert tuple(cache[row["name"]].shape) == row["shape"], row["name"]
        assert row["meaning"]
        if "pos" in row["dims"]:
            assert cache[row["name"]].shape[1] == pos


def test_names_filter_records_only_what_it_selects(family):
    model = small_lm(family)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert sorted(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    assert list(cache) == ["blocks.1.hook_resid_pre"]


def test_pos_slice_cuts_axis_one_even_for_four_dimensional_states():
    model = small_lm("s6")
    tokens = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(0))
    _, full = model.run_with_cache(tokens)
    _, last = model.run_with_cache(tokens, pos_slice=-1)
    state = "blocks.0.mixer.hook_state"
    assert full[state].ndim == 4 and last[state].shape == (2, 1, *full[state].shape[2:])
    torch.testing.assert_close(last[state], full[state][:, -1:])
    _, window = model.run_with_cache(tokens, pos_slice=slice(2, 5))
    torch.testing.assert_close(window["blocks.1.mixer.hook_y"], full["blocks.1.mixer.hook_y"][:, 2:5])
    # initial-state hooks have no position axis and are left whole
    initial = "blocks.0.mixer.hook_initial_state"
    assert window[initial].shape == full[initial].shape


def test_unknown_hook_name_is_a_clear_error_everywhere():
    model = small_lm("lstm")
    tokens = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(UnknownHookError, match="did you mean 'blocks.0.mixer.hook_c'"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_cc", lambda x, hook: x)])
    with pytest.raises(UnknownHookError):
        model.run_with_cache(tokens, names_filter=["blocks.9.hook_resid_post"])
    with pytest.raises(KeyError):  # still a KeyError for code that catches those
        model.add_hook("no_such_hook", lambda x, hook: x)
    # nothing was left attached by the failed calls
    assert all(len(hp._forward_hooks) == 0 for hp in model.hook_dict.values())


def test_hooks_are_removed_after_run_with_hooks():
    model = small_lm("gru")
    tokens = torch.zeros(1, 3, dtype=torch.long)
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_h", lambda x, hook: x * 2)])
    assert all(len(hp._forward_hooks) == 0 for hp in model.hook_dict.values())


def test_recording_beyond_the_memory_budget_is_refused_with_the_number():
    model = small_lm("s6", d_hidden=16, d_state=8)
    tokens = torch.zeros(4, 50, dtype=torch.long)
    state_bytes = 4 * 50 * 16 * 8 * 8  # float64 [batch, pos, d_inner, d_state]
    with torch.no_grad():
        needed = model.estimate_memory(tokens, names_filter="blocks.0.mixer.hook_state")
        assert needed.parts["recording (1 hook)"] == state_bytes
        with pytest.raises(MemoryBudgetError, match=f"{needed.total:,} bytes"):
            model.run_with_cache(tokens, names_filter="blocks.0.mixer.hook_state",
                                 memory_budget_bytes=needed.total - 1)
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mixer.hook_state",
                                        memory_budget_bytes=needed.total)
    assert cache["blocks.0.mixer.hook_state"].numel() * 8 == state_bytes


def test_empty_and_out_of_range_inputs_are_clear_errors():
    model = small_lm("lstm")
    with pytest.raises(EmptyInputError):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 7\)"):
        model(torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match="unknown path"):
        model(torch.tensor([[1]]), path="turbo")


def test_loss_return_type_is_next_token_cross_entropy():
    model = small_lm("mingru")
    tokens = torch.randint(0, 7, (2, 8), generator=torch.Generator().manual_seed(0))
    logits = model(tokens)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(model(tokens, return_type="loss"), expected)


def test_incremental_forward_with_carried_state_equals_one_pass(family):
    model = small_lm(family)
    tokens = torch.randint(0, 7, (2, 12), generator=torch.Generator().manual_seed(1))
    whole = model(tokens)
    first, state = model(tokens[:, :5], return_state=True)
    second = model(tokens[:, 5:], initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-10, rtol=1e-10)


def test_generation_steps_the_recurrence_with_hooks_firing_per_token(family):
    model = small_lm(family)
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, max_new_tokens=6, greedy=True)
    assert out.shape == (1, 9)
    # greedy continuation agrees with a full forward over the result
    logits = model(out)
    torch.testing.assert_close(logits[:, 2:-1].argmax(-1), out[:, 3:])
    calls = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: calls.append(x.shape[1]))]):
        model.generate(prompt, max_new_tokens=4, greedy=True)
    assert calls == [3, 1, 1, 1, 1]
    sampled = [model.generate(prompt, max_new_tokens=8, seed=3) for _ in range(2)]
    assert torch.equal(sampled[0], sampled[1])


def test_sequence_to_sequence_model_has_the_same_hook_contract(family):
    torch.manual_seed(0)
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=8, d_hidden=6, d_input=3, d_output=2,
                          d_state=2, norm="none")
    model = HookedRecurrentSeq2Seq(cfg).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    ref, ref_cache = model.run_with_cache(x, path="reference")
    fused, fused_cache = model.run_with_cache(x, path="fused")
    assert ref.shape == (2, 7, 2)
    torch.testing.assert_close(fused, ref, atol=1e-10, rtol=1e-10)
    assert "hook_output" in fused_cache and "blocks.0.mixer.hook_h" in fused_cache or family == "s6"
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(1, 4, 5))
