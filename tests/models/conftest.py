"""Small models of every family, shared by the model tests."""

from __future__ import annotations

import pytest
import torch

from workbench.models import MIXER_FAMILIES, HookedRecurrentLM, RecurrentConfig


def small_lm(
    family: str, dtype: torch.dtype = torch.float64, seed: int = 0, **overrides
) -> HookedRecurrentLM:
    torch.manual_seed(seed)
    settings = dict(family=family, n_layers=2, d_model=12, d_hidden=10, d_vocab=7, d_state=3)
    settings.update(overrides)
    return HookedRecurrentLM(RecurrentConfig(**settings)).to(dtype)


@pytest.fixture(params=MIXER_FAMILIES)
def family(request) -> str:
    return request.param
