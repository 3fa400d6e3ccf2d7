"""Attribution patching (Nanda 2023; Kramár et al. 2024): grad · (source − target) at every hook and
position, checked against the directional derivative of a linear metric by central finite
differences of the edit ε·(source − target) at that hook and position."""

from __future__ import annotations

import pytest
import torch

from tests.analysis.patching.helpers import VOCAB, hooks_of, pair, small
from workbench.analysis.patching import Pair, activation_patching, attribution_patching, logit_difference
from workbench.models import MIXER_FAMILIES
from workbench.utils import get_act_name

PATHS = ("reference", "fused")


class Linear:
    """A fixed linear function of the logits at every position: [batch, pos, vocab] -> [batch]."""

    def __init__(self, length: int, seed: int = 3):
        self.weight = torch.randn(length, VOCAB, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits * self.weight).sum((1, 2))


def full_names(model, hooks):
    return {(get_act_name(h, layer) if h in ("resid_pre", "resid_post", "mixer_out")
             else get_act_name(h, layer, "mixer")) for h in hooks for layer in (0, 1)}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", MIXER_FAMILIES)
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_attribution_equals_the_finite_difference_of_a_linear_metric(family, path, direction):
    model = small(family)
    p = pair(batch=1)
    metric = Linear(p.clean.shape[1])
    hooks = hooks_of(model)
    df = attribution_patching(model, p, metric, hooks=hooks, direction=direction, path=path)
    assert len(df) == 2 * len(hooks) * p.clean.shape[1]
    source, target = (p.clean, p.corrupted) if direction == "denoising" else (p.corrupted, p.clean)
    names = sorted(full_names(model, hooks))
    with torch.no_grad():
        _, src = model.run_with_cache(source, names_filter=names, path=path)
        _, tgt = model.run_with_cache(target, names_filter=names, path=path)
    eps = 1e-5
    checked = 0
    for row in df.itertuples():
        delta = src[row.name][:, row.position] - tgt[row.name][:, row.position]

        def edit(x, hook, scale, position=row.position, delta=delta):
            out = x.clone()
            out[:, position] = out[:, position] + scale * delta
            return out

        with torch.no_grad():
            up = metric(model.run_with_hooks(target, fwd_hooks=[(row.name, lambda x, hook: edit(x, hook, eps))],
                                             path=path))
            down = metric(model.run_with_hooks(target, fwd_hooks=[(row.name, lambda x, hook: edit(x, hook, -eps))],
                                               path=path))
        derivative = float((up - down).sum() / (2 * eps))
        assert row.effect == pytest.approx(derivative, rel=1e-5, abs=1e-7), (row.name, row.position)
        checked += abs(derivative) > 1e-6
    assert checked > len(df) // 4  # most sites matter to the metric


@pytest.mark.parametrize("family", ["lstm", "s6"])
def test_attribution_of_a_run_with_itself_is_zero_and_leaves_no_parameter_gradients(family):
    model = small(family)
    clean = pair().clean
    df = attribution_patching(model, Pair(clean, clean), logit_difference(1, 2), hooks=hooks_of(model))
    assert df.effect.abs().max() < 1e-12  # the gradient pass's values equal the fast pass's to rounding
    assert all(param.grad is None for param in model.parameters())


def test_attribution_tracks_activation_patching_on_the_residual_stream():
    """A first-order estimate: close to the real effects where they are small, correlated overall."""
    model = small("gru")
    p = pair(batch=2)
    metric = logit_difference(1, 2)
    real = activation_patching(model, p, metric, hooks=["resid_pre", "resid_post"])
    estimate = attribution_patching(model, p, metric, hooks=["resid_pre", "resid_post"])
    assert list(real[["layer", "position", "hook"]].itertuples(index=False)) == list(
        estimate[["layer", "position", "hook"]].itertuples(index=False))
    # both methods say that positions before the first difference between the runs have no effect
    same = (p.clean == p.corrupted).all(0)
    first_diff = int((~same).nonzero()[0])
    early = estimate.position < first_diff
    assert estimate[early].effect.abs().max() < 1e-12 and real[early].effect.abs().max() < 1e-12
    correlation = torch.corrcoef(torch.tensor([real.effect.to_list(), estimate.effect.to_list()]))[0, 1]
    assert correlation > 0.5
