"""Written against TransformerLens's documented `ActivationCache` and `HookedTransformer` API: what a
TransformerLens user calls works on the default model and on a Mamba adapter, with the same meaning,
and what has no recurrent meaning says what to use instead."""

from __future__ import annotations

import pytest
import torch

import workbench


def default_model():
    return workbench.load("lstm-stdlib-2x128")


def mamba_adapter():
    pytest.importorskip("transformers")
    from tests.adapters.conftest import tiny

    return workbench.from_transformers(tiny("mamba"))


MODELS = {"default": default_model, "mamba": mamba_adapter}


@pytest.fixture(params=sorted(MODELS), scope="module")
def run(request):
    """(model, tokens, logits, cache) of one float32 run with every hook cached."""
    model = MODELS[request.param]()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return model, tokens, logits, cache


def test_direct_logit_attribution_reproduces_the_logit_difference(run):
    model, _, logits, cache = run
    a, b = 3, 5
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and labels[1] == "0_mixer_out" and len(stack) == len(labels)
    attrs = cache.logit_attrs(stack, a, b)  # [component, batch, pos]
    assert attrs.shape == (len(labels), *logits.shape[:2])
    total = attrs.sum(0) + (model.b_U[a] - model.b_U[b])
    torch.testing.assert_close(total, logits[..., a] - logits[..., b], atol=1e-5, rtol=0)
    # the same through apply_ln_to_stack and W_U, per component
    normed = cache.apply_ln_to_stack(stack)
    torch.testing.assert_close(normed @ (model.W_U[:, a] - model.W_U[:, b]), attrs, atol=1e-5, rtol=0)


def test_the_summands_add_up_to_the_stream_they_decompose(run):
    model, _, _, cache = run
    n = len(model.blocks)
    torch.testing.assert_close(cache.decompose_resid().sum(0), cache["resid_post", n - 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.decompose_resid(layer=1).sum(0), cache["resid_pre", 1], atol=1e-5, rtol=1e-5)
    accumulated, labels = cache.accumulated_resid(return_labels=True)
    assert labels == [f"{i}_pre" for i in range(n)] + ["final_post"]
    torch.testing.assert_close(accumulated[-1], cache["resid_post", n - 1])
    assert cache.accumulated_resid(layer=1, pos_slice=-1).shape == (1, 2, 1, model.cfg.d_model)
    stacked = cache.stack_activation("resid_post")
    assert stacked.shape == (n, 2, 12, model.cfg.d_model)
    with pytest.raises(ValueError, match="no attention: mode='mixer'"):
        cache.decompose_resid(mode="attn")
    mixers = cache.decompose_resid(mode="mixer", incl_embeds=False, return_labels=True)[1]
    assert mixers == [f"{i}_mixer_out" for i in range(n)]


def test_per_row_tokens_and_slices(run):
    model, _, logits, cache = run
    correct, incorrect = torch.tensor([1, 2]), torch.tensor([4, 0])
    stack = cache.decompose_resid(pos_slice=-1)  # [component, batch, 1, d_model]
    attrs = cache.logit_attrs(stack, correct, incorrect, pos_slice=-1)
    rows = torch.arange(2)
    expected = logits[rows, -1, correct] - logits[rows, -1, incorrect] - (model.b_U[correct] - model.b_U[incorrect])
    torch.testing.assert_close(attrs.sum(0)[:, 0], expected, atol=1e-5, rtol=0)


def test_short_names_lookup_batch_removal_and_moving(run):
    model, tokens, _, cache = run
    state = "c" if model.cfg.family == "lstm" else "state"
    assert cache[state, 0] is cache[f"blocks.0.mixer.hook_{state}"]
    assert cache["resid_post", 1] is cache["blocks.1.hook_resid_post"]
    assert cache.to("cpu") is cache
    with pytest.raises(ValueError, match="needs a batch of 1"):
        cache.remove_batch_dim()
    with torch.no_grad():
        logits, one = model.run_with_cache(tokens[:1])
    one.remove_batch_dim()
    assert one["resid_post", 0].shape == (12, model.cfg.d_model)
    attrs = one.logit_attrs(one.decompose_resid(), 3)
    torch.testing.assert_close(attrs.sum(0) + model.b_U[3], logits[0, :, 3], atol=1e-5, rtol=0)


def test_model_names(run):
    model, tokens, _, _ = run
    assert model.W_U.shape == (model.cfg.d_model, model.cfg.d_vocab)
    assert model.W_E.shape == (model.cfg.d_vocab, model.cfg.d_model)
    assert model.b_U.shape == (model.cfg.d_vocab,)
    if model.tokenizer is not None:
        text = model.to_string(tokens[0])
        assert isinstance(text, str) and len(model.to_string(tokens)) == 2
        token = model.to_string(tokens[0, 0])
        assert model.to_single_token(token) == int(tokens[0, 0])
        with pytest.raises(ValueError, match="tokens, not one"):
            model.to_single_token(token * 3)


def test_a_cache_without_its_model_says_so():
    from workbench.models.cache import RecurrentCache

    with pytest.raises(ValueError, match="no model attached"):
        RecurrentCache({"blocks.0.hook_resid_pre": torch.zeros(1, 2, 3)}).decompose_resid()


def test_return_types_inputs_and_tokens_as_transformer_lens(run):
    model, tokens, logits, _ = run
    with torch.no_grad():
        both = model(tokens, return_type="both")
        loss = model(input=tokens, return_type="loss")
        per_token = model(tokens, return_type="loss", loss_per_token=True)
    torch.testing.assert_close(both[0], logits)
    torch.testing.assert_close(both[1], loss)
    assert per_token.shape == (2, 11)
    torch.testing.assert_close(per_token.mean(), loss)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=1e-5)
    for wrong in ("logit", "Logits", "probs", 3):
        with pytest.raises(ValueError, match="return_type must be one of 'logits', 'loss', 'both', None"):
            model(tokens, return_type=wrong)
    with pytest.raises(TypeError, match="not both"):
        model(tokens, input=tokens)
    if model.tokenizer is None:
        return
    text = model.to_string(tokens[0])
    assert model.to_tokens(text, prepend_bos=False).shape[-1] == model.to_tokens(text).shape[-1]


def test_the_out_of_vocabulary_advice_works_on_to_tokens_and_prepend_bos_is_explained():
    from workbench.errors import UnknownCharacterError

    model = default_model()
    with pytest.raises(UnknownCharacterError, match="unknown='map'") as caught:
        model.to_tokens("x = '龍'")
    assert "unknown='map'" in str(caught.value)
    mapped = model.to_tokens("x = '龍'", unknown="map")
    assert mapped.shape == (1, 7)
    with pytest.raises(ValueError, match="no BOS token"):
        model.to_tokens("x", prepend_bos=True)


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba", "mamba2"])
def test_transformer_lens_ssm_bridge_names_reach_the_same_tensors(family):
    pytest.importorskip("transformers")
    from tests.adapters.conftest import tiny
    from workbench.adapters.tl_names import NOT_ALIASED

    model = workbench.from_transformers(tiny(family))
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 6), generator=torch.Generator().manual_seed(1))
    aliases = ["blocks.0.mixer.hook_ssm_out", "blocks.1.hook_in", "blocks.0.mixer.hook_in", "ln_final.hook_out"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=aliases)
    assert cache["blocks.0.mixer.hook_ssm_out"] is cache["blocks.0.hook_mixer_out"]
    assert cache["blocks.1.hook_in"] is cache["blocks.1.hook_resid_pre"]
    # an edit through an alias is an edit of our hook point: zeroing the mixer's output at the last
    # position changes the logits there exactly as through our own name
    def zero_last(x, hook):
        out = x.clone()
        out[:, -1] = 0
        return out

    with torch.no_grad():
        by_alias = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_ssm_out", zero_last)])
        by_name = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mixer_out", zero_last)])
        plain = model(tokens)
    torch.testing.assert_close(by_alias, by_name)
    assert not torch.allclose(by_alias[:, -1], plain[:, -1])
    if family == "mamba2":
        assert model.canonical_hook_name("blocks.0.mixer.hook_inner_norm") == "blocks.0.mixer.hook_normed"
    with pytest.raises(KeyError, match="hook_ssm_state"):  # not aliased: its meaning differs (NOT_ALIASED)
        model.run_with_cache(tokens, names_filter="blocks.0.mixer.hook_ssm_state")
    assert "mixer.hook_ssm_state" in NOT_ALIASED


def test_what_has_no_recurrent_meaning_names_the_alternative(run):
    model, _, _, cache = run
    for name in ("stack_head_results", "compute_head_results", "get_full_resid_decomposition",
                 "stack_neuron_results"):
        with pytest.raises(AttributeError, match="decompose_resid"):
            getattr(cache, name)()
    for name in ("W_Q", "W_O", "OV", "QK"):
        with pytest.raises(AttributeError, match="no attention weights.*implicit_attention"):
            getattr(model, name)
    with pytest.raises(AttributeError, match="no positional embedding"):
        _ = model.W_pos
    with pytest.raises(AttributeError, match="no attribute 'no_such_method'"):
        _ = cache.no_such_method
    assert model.blocks is not None and model.embed.weight is model.W_E  # nn.Module attributes still resolve
