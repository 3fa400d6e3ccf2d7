"""Shared fixtures for the SAE tests: the default model, a text's tokens, a random SAE on a state."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.sae import HookedSAE, SAEConfig

STATE_HOOK = "blocks.0.mixer.hook_c"  # the LSTM cell state of layer 0, [batch, pos, d_hidden]
TEXT = "def f(x):\n    return (x + 1) * [y for y in range(3)]\n"


@pytest.fixture(scope="module")
def model() -> workbench.models.HookedRecurrentLM:
    return workbench.load("lstm-stdlib-2x128")


@pytest.fixture(scope="module")
def tokens(model) -> torch.Tensor:
    return model.to_tokens(TEXT)  # [1, pos]


def random_sae(d_in: int, d_sae: int, hook_name: str | None = STATE_HOOK, seed: int = 0,
               architecture: str = "standard") -> HookedSAE:
    """An SAE with random weights (scaled so that about half its latents fire on a cell state)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=generator) / d_in**0.5,
        "b_enc": torch.zeros(d_sae),
        "W_dec": torch.randn(d_sae, d_in, generator=generator) / d_sae**0.5,
        "b_dec": torch.randn(d_in, generator=generator) * 0.1,
    }
    if architecture == "jumprelu":
        weights["threshold"] = torch.rand(d_sae, generator=generator) * 0.1
    k = d_sae // 4 if architecture == "topk" else None
    return HookedSAE(SAEConfig(architecture, d_in, d_sae, hook_name=hook_name, k=k), weights)
