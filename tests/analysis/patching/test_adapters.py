"""The patching sweeps run on Hugging Face models opened by the adapters, exactly as on native ones:
a Mamba adapter in full (both paths, every check), every other adapted family on a smaller sweep."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import workbench  # noqa: E402
from tests.adapters.conftest import FAMILIES, tiny  # noqa: E402
from tests.analysis.patching.helpers import check_cells as check_every_cell  # noqa: E402
from workbench.analysis.patching import (  # noqa: E402
    Pair,
    activation_patching,
    attribution_patching,
    logit_difference,
    patched_logits,
    substitute_tokens,
)
from workbench.utils import get_act_name  # noqa: E402

PATHS = ("reference", "fused")


def adapted(family: str):
    return workbench.from_transformers(tiny(family, torch.float64))


def make_pair(length: int = 6) -> Pair:
    clean = torch.randint(0, 50, (2, length), generator=torch.Generator().manual_seed(0))
    return Pair(clean, substitute_tokens(clean, {1: 7, 3: 9}))


def check_cells(model, p, df, metric, path):
    """Every cell of `df` (denoising) against its own `run_with_hooks` call."""
    check_every_cell(model, p.clean, p.corrupted, df, metric, path)


@pytest.mark.parametrize("path", PATHS)
def test_mamba_adapter_sweep_equals_separate_runs_and_denoises_to_clean(path):
    model = adapted("mamba")
    p = make_pair()
    metric = logit_difference(4, 5)
    hooks = ["resid_pre", "resid_post", "mixer_out", "state", "delta"]
    df = activation_patching(model, p, metric, hooks=hooks, batch_size=4, path=path)
    assert len(df) == 2 * len(hooks) * 6
    check_cells(model, p, df, metric, path)
    itself = activation_patching(model, Pair(p.clean, p.clean), metric, hooks=hooks, path=path)
    assert itself.effect.abs().max() < 1e-12
    with torch.no_grad():
        clean = metric(model(p.clean, path=path))
    torch.testing.assert_close(metric(patched_logits(model, p, "resid_post", layer=1, path=path)), clean,
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_mamba_adapter_attribution_equals_the_finite_difference(path):
    model = adapted("mamba")
    p = make_pair()
    weight = torch.randn(6, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def metric(logits):  # linear in the logits
        return (logits * weight).sum((1, 2))

    df = attribution_patching(model, p, metric, hooks=["resid_post", "state", "gate"], layers=[0], path=path)
    names = sorted(set(df.name))
    with torch.no_grad():
        _, src = model.run_with_cache(p.clean, names_filter=names, path=path)
        _, tgt = model.run_with_cache(p.corrupted, names_filter=names, path=path)
    # the library's RMSNorm computes in float32 even for a float64 model: the metric carries float32
    # rounding (~1e-7 relative), so the step is larger than on native models and the tolerance looser
    eps = 1e-3
    for row in df.itertuples():
        delta = src[row.name][:, row.position] - tgt[row.name][:, row.position]

        def edit(x, hook, scale, position=row.position, delta=delta):
            out = x.clone()
            out[:, position] = out[:, position] + scale * delta
            return out

        with torch.no_grad():
            up, down = (metric(model.run_with_hooks(p.corrupted, path=path,
                                                    fwd_hooks=[(row.name, lambda x, hook, s=s: edit(x, hook, s))]))
                        for s in (eps, -eps))
        derivative = float((up - down).mean() / (2 * eps))
        assert row.effect == pytest.approx(derivative, rel=1e-3, abs=1e-3), (row.name, row.position)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"mamba"}))
def test_every_adapter_sweeps_its_state_and_residual_stream(family):
    model = adapted(family)
    p = make_pair(5)
    metric = logit_difference(4, 5)
    state = FAMILIES[family].state_hook
    df = activation_patching(model, p, metric, hooks=["resid_post", state], positions=[1, 2, 4], path="fused")
    layers = FAMILIES[family].layers_with_state(len(model.blocks))
    assert set(df[df.hook == state].layer) == set(layers)
    check_cells(model, p, df, metric, "fused")
    estimate = attribution_patching(model, p, metric, hooks=["resid_post", state], positions=[1, 2, 4])
    assert list(estimate.name) == list(df.name)
    assert estimate.effect.notna().all()
    assert get_act_name(state, layers[0], "mixer") in set(df.name)
