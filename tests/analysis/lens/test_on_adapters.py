"""The lenses work on Hugging Face models opened by the adapters, exactly as on our own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import workbench  # noqa: E402
from workbench.analysis.lens import LogitLens, TunedLens  # noqa: E402


def tiny_mamba():
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=40, hidden_size=16, state_size=4, num_hidden_layers=3)
    return workbench.from_transformers(transformers.MambaForCausalLM(config))


def test_logit_lens_at_the_last_layer_equals_the_adapters_logits():
    model = tiny_mamba()
    tokens = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        read_out = LogitLens(model)(cache["blocks.2.hook_resid_post"], 2)
    torch.testing.assert_close(read_out, logits)


def test_tuned_lens_translators_start_as_the_logit_lens_on_an_adapter():
    model = tiny_mamba()
    tokens = torch.randint(0, 40, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        resid = cache["blocks.0.hook_resid_post"]
        torch.testing.assert_close(TunedLens.from_model(model)(resid, 0), LogitLens(model)(resid, 0))


def tiny_recurrent_gemma():
    torch.manual_seed(0)
    config = transformers.RecurrentGemmaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=3, lru_width=16, attention_window_size=4, conv1d_width=4)
    return workbench.from_transformers(transformers.RecurrentGemmaForCausalLM(config))


def tiny_xlstm():
    torch.manual_seed(0)
    config = transformers.xLSTMConfig(vocab_size=40, hidden_size=128, num_hidden_layers=2, num_heads=4,
                                      qk_dim_factor=0.5, ffn_proj_factor=1.0, chunk_size=8)
    return workbench.from_transformers(transformers.xLSTMForCausalLM(config))


@pytest.mark.parametrize("build", [tiny_recurrent_gemma, tiny_xlstm], ids=["recurrent_gemma", "xlstm"])
def test_logit_lens_decodes_through_the_soft_capped_head_of_griffin_and_xlstm(build):
    """Both heads soft-cap their logits; the lens's last read-out is still the model's output exactly."""
    model = build()
    tokens = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(2))
    last = len(model.blocks) - 1
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        read_out = LogitLens(model)(cache[f"blocks.{last}.hook_resid_post"], last)
        resid = cache["blocks.0.hook_resid_post"]
        torch.testing.assert_close(TunedLens.from_model(model)(resid, 0), LogitLens(model)(resid, 0))
    torch.testing.assert_close(read_out, logits)


@pytest.mark.parametrize(("build", "layer", "quantity"),
                         [(tiny_recurrent_gemma, 0, "h"), (tiny_xlstm, 1, "m")], ids=["recurrent_gemma", "xlstm"])
def test_cells_recording_runs_on_griffin_and_xlstm_with_the_state_carried(build, layer, quantity):
    """Chunked recording (state carried between chunks) equals one pass, on the Hugging Face adapters."""
    from workbench.analysis.cells import record
    from workbench.data.tokenizer import CharTokenizer

    model = build()
    text = "the cat sat on the mat and the dog sat on the log"
    tokenizer = CharTokenizer.from_text(text)
    chunked = record(model, text, quantity, layer, tokenizer=tokenizer, chunk=7)
    whole = record(model, text, quantity, layer, tokenizer=tokenizer)
    values = chunked.get(layer, quantity)
    assert values.shape[0] == len(text)
    np.testing.assert_allclose(values, whole.get(layer, quantity), atol=1e-5, rtol=1e-5)


def test_cells_recording_defaults_to_the_recurrent_layers_of_griffin():
    """With no layers given, cells record every RG-LRU block and skip the local-attention blocks."""
    from workbench.analysis.cells import record
    from workbench.data.tokenizer import CharTokenizer

    model = tiny_recurrent_gemma()
    text = "def f(x):\n    return (x + 1)\n"
    recording = record(model, text, "h", tokenizer=CharTokenizer.from_text(text))
    assert model.recurrent_layers and len(model.recurrent_layers) < len(model.blocks)
    assert sorted({layer for layer, _ in recording.values}) == model.recurrent_layers
