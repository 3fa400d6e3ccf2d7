"""Small float64 models and pairs shared by the patching tests."""

from __future__ import annotations

import torch

from workbench.analysis.patching import Pair, substitute_tokens
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.models.protocol import carried_state

# a gate (or pre-activation) of each native family, patched beside its carried state
GATES = {"elman": "pre", "lstm": "f", "gru": "z", "mingru": "z", "minlstm": "f", "s6": "delta"}
VOCAB = 7


def small(family: str, seed: int = 0) -> HookedRecurrentLM:
    torch.manual_seed(seed)
    cfg = RecurrentConfig(family=family, n_layers=2, d_model=12, d_hidden=10, d_vocab=VOCAB, d_state=3)
    return HookedRecurrentLM(cfg).double()


def pair(batch: int = 2, length: int = 6, seed: int = 0) -> Pair:
    clean = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    corrupted = substitute_tokens(clean, {1: (int(clean[0, 1]) + 1) % VOCAB, 3: (int(clean[0, 3]) + 2) % VOCAB})
    return Pair(clean, corrupted)


def hooks_of(model: HookedRecurrentLM) -> list[str]:
    """Residual stream, mixer output, the carried state and a gate."""
    return ["resid_pre", "resid_post", "mixer_out", carried_state(model), GATES[model.cfg.family]]
