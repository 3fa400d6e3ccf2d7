"""Knockout: zero or mean ablation of a state at chosen positions, against a hand-written hook."""

from __future__ import annotations

import pytest
import torch

from tests.analysis.patching.helpers import pair, small
from workbench.analysis.patching import knockout, logit_difference


@pytest.mark.parametrize("path", ["reference", "fused"])
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_knockout_equals_a_hand_written_ablation(path, ablation):
    model = small("lstm")
    tokens = pair().clean
    metric = logit_difference(1, 2)
    df = knockout(model, tokens, metric, "c", positions=[1, 2], channels=[0, 3], ablation=ablation, path=path)
    assert list(df.layer) == [0, 1]
    with torch.no_grad():
        plain = metric(model(tokens, path=path)).mean()
        _, cache = model.run_with_cache(tokens, names_filter=list(df.name), path=path)
    for row in df.itertuples():
        value = 0.0 if ablation == "zero" else cache[row.name].mean((0, 1))[[0, 3]]

        def ablate(x, hook, value=value):
            out = x.clone()
            for position in (1, 2):
                out[:, position, [0, 3]] = value
            return out

        with torch.no_grad():
            expected = metric(model.run_with_hooks(tokens, fwd_hooks=[(row.name, ablate)], path=path)).mean()
        assert row.effect == pytest.approx(float(expected - plain), abs=1e-10)
    assert df.attrs["metric"] == pytest.approx(float(plain))
    assert df.effect.abs().max() > 0
