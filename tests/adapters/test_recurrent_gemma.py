"""RecurrentGemma (Griffin): the RG-LRU equations hold on the hooks, local attention matches the library's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.adapters import from_transformers

from .conftest import tiny, tokens


def add_at(position: int, amount: float):
    def hook(x, hook):
        x[:, position] = x[:, position] + amount
        return x

    return hook


def test_rg_lru_recurrence_holds_on_the_hooked_quantities():
    """h_t = a_t h_{t−1} + sqrt(1 − a_t²) i_t u_t, a_t = exp(−8 r_t softplus(Λ)), reset at position 0."""
    hf = tiny("recurrent_gemma", torch.float64)
    model = from_transformers(hf)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(2, 9, seed=20))
    for layer in model.recurrent_layers:
        get = {q: cache[f"blocks.{layer}.mixer.hook_{q}"] for q in ("conv", "r", "i", "a", "normalized_x", "h")}
        lam = hf.model.layers[layer].temporal_block.rg_lru.recurrent_param
        decay = torch.exp(-8.0 * get["r"] * F.softplus(lam))
        torch.testing.assert_close(get["a"][:, 1:], decay[:, 1:])
        assert torch.all(get["a"][:, 0] == 0), "the RG-LRU does not reset at position 0"
        torch.testing.assert_close(get["normalized_x"],
                                   torch.sqrt(1 - get["a"] ** 2) * get["i"] * get["conv"])
        previous = torch.cat([torch.zeros_like(get["h"][:, :1]), get["h"][:, :-1]], dim=1)
        torch.testing.assert_close(get["h"], get["a"] * previous + get["normalized_x"], atol=1e-12, rtol=1e-12)
        assert 0.05 < float(get["a"][:, 1:].min()) and float(get["a"].max()) < 1


def test_continuing_a_text_does_not_reset_the_recurrence():
    """The state's position makes the second call a continuation: a_t is not zeroed at its first token."""
    model = from_transformers(tiny("recurrent_gemma", torch.float64))
    ids = tokens(1, 8, seed=21)
    name = f"blocks.{model.recurrent_layers[0]}.mixer.hook_a"
    with torch.no_grad():
        _, state = model(ids[:, :5], return_state=True)
        _, cache = model.run_with_cache(ids[:, 5:], initial_state=state, names_filter=name)
        _, fresh = model.run_with_cache(ids[:, 5:], names_filter=name)
    assert torch.all(cache[name][:, 0] > 0) and torch.all(fresh[name][:, 0] == 0)
    assert float(state[0]["position"][0]) == 5.0


def test_attention_pattern_equals_the_library_attention_weights_in_window_layout():
    hf = tiny("recurrent_gemma")
    hf.set_attn_implementation("eager")  # the library returns weights only from its eager path
    model = from_transformers(hf)
    ids, window = tokens(2, 10, seed=22), hf.config.attention_window_size
    layer = next(i for i, kind in enumerate(model.block_types) if kind == "sliding_attention")
    with torch.no_grad():
        weights = hf(ids, output_attentions=True).attentions[0]  # [batch, heads, query, key]
        _, cache = model.run_with_cache(ids, names_filter=f"blocks.{layer}.mixer.hook_pattern")
    pattern = cache[f"blocks.{layer}.mixer.hook_pattern"]  # [batch, pos, heads, window]
    for t in range(ids.shape[1]):
        for s in range(window):
            key = t - (window - 1) + s
            expected = weights[:, :, t, key] if key >= 0 else torch.zeros_like(weights[:, :, t, 0])
            torch.testing.assert_close(pattern[:, t, :, s], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern[..., 0]))


def test_editing_any_attention_quantity_is_causal_and_equal_on_both_paths():
    model = from_transformers(tiny("recurrent_gemma", torch.float64))
    ids = tokens(1, 10, seed=23)
    layer = next(i for i, kind in enumerate(model.block_types) if kind == "sliding_attention")
    with torch.no_grad():
        clean = model(ids)
        for quantity in model.blocks[layer].mixer.quantities:
            name = f"blocks.{layer}.mixer.hook_{quantity}"
            outs = [model.run_with_hooks(ids, fwd_hooks=[(name, add_at(6, 0.3))], path=p)
                    for p in ("reference", "fused")]
            torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=1e-10, msg=name)
            change = (outs[0] - clean).abs().amax(dim=(0, 2))
            assert torch.all(change[:6] == 0), name
            assert change[6:].max() > 0, f"editing {name} changed nothing"


def test_pushing_a_decay_past_one_gives_a_finite_zero_input_not_nan():
    model = from_transformers(tiny("recurrent_gemma", torch.float64))
    name = f"blocks.{model.recurrent_layers[0]}.mixer.hook_a"
    with torch.no_grad():
        logits = model(tokens(1, 6, seed=24))

        def saturate(x, hook):
            x[:, 3] = 1.5
            return x

        edited = model.run_with_hooks(tokens(1, 6, seed=24), fwd_hooks=[(name, saturate)])
    assert torch.isfinite(edited).all()
    assert not torch.allclose(edited[:, 3:], logits[:, 3:])


def test_padding_enters_the_recurrence_as_in_the_library_and_masks_only_attention():
    """Left padding changes the real tokens' logits in the library too: the RG-LRU reads pad tokens."""
    hf = tiny("recurrent_gemma")
    model = from_transformers(hf)
    ids = tokens(1, 8, seed=25)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        padded = model(ids, attention_mask=mask)
        alone = model(ids[:, 3:])
        torch.testing.assert_close(padded, hf(ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[:, 3:], alone, atol=1e-4)
