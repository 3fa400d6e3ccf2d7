"""The lenses work on Hugging Face models opened by the adapters, exactly as on our own."""

from __future__ import annotations

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
