"""TransformerLens's `stop_at_layer` and `prepend_bos` on `forward`, as SAELens's activation store
calls them: `run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1, prepend_bos=False)`."""

from __future__ import annotations

import pytest
import torch

import workbench


@pytest.fixture(scope="module")
def model():
    return workbench.load("lstm-stdlib-2x128")


def test_stop_at_layer_returns_the_residual_stream_after_that_many_blocks(model):
    tokens = model.to_tokens("x = [1, 2]\n")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    for stop in (1, 2, -1):
        out = model(tokens, stop_at_layer=stop)
        layer = stop % model.cfg.n_layers or model.cfg.n_layers
        assert torch.equal(out, cache[f"blocks.{layer - 1}.hook_resid_post"]), stop
    out, partial = model.run_with_cache(tokens, names_filter=["blocks.0.mixer.hook_c", "blocks.1.mixer.hook_c"],
                                        stop_at_layer=1, prepend_bos=False)
    assert out.shape == (1, tokens.shape[1], model.cfg.d_model)
    assert set(partial) == {"blocks.0.mixer.hook_c"}, "blocks after the stop do not run"


@pytest.mark.parametrize("stop", [0, 3, -2, 1.5, True])
def test_a_stop_outside_the_blocks_says_what_is_expected(model, stop):
    with pytest.raises(ValueError, match=r"stop_at_layer must be an int in 1\.\.2"):
        model(model.to_tokens("x"), stop_at_layer=stop)


def test_text_inputs_take_prepend_bos_and_the_tokenizer_names_its_special_tokens(model):
    assert torch.equal(model("ab", prepend_bos=False), model(model.to_tokens("ab")))
    with pytest.raises(ValueError, match="no BOS token"):
        model("ab", prepend_bos=True)
    assert (model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.sep_token_id) == (None,) * 3
