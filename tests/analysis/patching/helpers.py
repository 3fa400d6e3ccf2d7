"""Small float64 models and pairs shared by the patching tests."""

from __future__ import annotations

import pytest
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


def check_cells(model, source: torch.Tensor, target: torch.Tensor, df, metric, path: str) -> None:
    """Every cell of a patching table against its own `run_with_hooks` call: the target run with that
    one (hook, position) taken from the source run."""
    names = sorted(set(df.name))
    with torch.no_grad():
        _, cache = model.run_with_cache(source, names_filter=names, path=path)
        baseline = metric(model(target, path=path)).mean()
    for row in df.itertuples():
        def patch(x, hook, position=row.position, name=row.name):
            out = x.clone()
            out[:, position] = cache[name][:, position]
            return out

        with torch.no_grad():
            logits = model.run_with_hooks(target, fwd_hooks=[(row.name, patch)], path=path)
        expected = float(metric(logits).mean() - baseline)
        assert row.effect == pytest.approx(expected, abs=1e-6), (row.name, row.position)


def hooks_of(model: HookedRecurrentLM) -> list[str]:
    """Residual stream, mixer output, the carried state and a gate."""
    return ["resid_pre", "resid_post", "mixer_out", carried_state(model), GATES[model.cfg.family]]
