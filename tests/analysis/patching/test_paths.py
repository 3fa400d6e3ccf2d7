"""Path patching through the state: every cell against hand-written hooks, and planted models where
one layer carries nothing across positions, so the split between paths is known exactly."""

from __future__ import annotations

import pytest
import torch

from tests.analysis.patching.helpers import VOCAB, pair, small
from workbench.analysis.patching import Pair, logit_difference, patching_heatmap, path_patching, substitute_tokens
from workbench.errors import UnknownHookError
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.utils import get_act_name

PATHS = ("reference", "fused")
METRIC = logit_difference(1, 2)


def set_at(values, positions):
    """A hook writing values [n, pos, d] at `positions` of every copy of the n rows."""
    def hook(x, hook):
        out = x.clone()
        n = values.shape[0]
        for p in positions:
            out[:, p] = values[torch.arange(x.shape[0]) % n, p]
        return out
    return hook


def hand_written(model, p: Pair, s: int, t: int, layer: int | None, path: str) -> float:
    """The denoising effect of source s at target t, from plain `run_with_hooks` calls: every path open
    (layer None), or through `layer`'s state alone."""
    clean, corrupted = p.clean[:, :t + 1], p.corrupted[:, :t + 1]
    enter0 = get_act_name("resid_pre", 0)
    with torch.no_grad():
        _, source = model.run_with_cache(clean, names_filter=enter0, path=path)
        baseline = METRIC(model(corrupted, path=path)).mean()
        total_hook = (enter0, set_at(source[enter0], [s]))
        if layer is None:
            return float(METRIC(model.run_with_hooks(corrupted, fwd_hooks=[total_hook], path=path)).mean() - baseline)
        enter, leave = get_act_name("resid_pre", layer), get_act_name("resid_post", layer)
        with model.hooks(fwd_hooks=[total_hook]):
            _, reached = model.run_with_cache(corrupted, names_filter=enter, path=path)
        _, held = model.run_with_cache(corrupted, names_filter=leave, path=path)
        hooks = [(enter, set_at(reached[enter], [s])), (leave, set_at(held[leave], range(s, t)))]
        return float(METRIC(model.run_with_hooks(corrupted, fwd_hooks=hooks, path=path)).mean() - baseline)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", ["lstm", "s6", "gru", "mingru"])
def test_every_cell_equals_hand_written_hooks(family, path):
    model, p = small(family), pair(length=7)
    df = path_patching(model, p, METRIC, target=5, batch_size=2, path=path)
    assert set(df.position) == set(range(5)) and df.attrs["target"] == 5
    for row in df[df.hook != "other"].itertuples():
        layer = None if row.hook == "total" else row.layer
        assert row.effect == pytest.approx(hand_written(model, p, row.position, 5, layer, path), abs=1e-9), row
    # the pair differs at positions 1 and 3 only: the other sources change nothing on any path
    assert df[~df.position.isin([1, 3])].effect.abs().max() < 1e-12
    assert df[df.position == 3].effect.abs().max() > 1e-4
    total = df[df.hook == "total"].set_index("position").effect
    paths = df[df.hook != "total"].groupby("position").effect.sum()
    assert (total - paths).abs().max() < 1e-12  # other = total − Σ state, by construction


def without_recurrence(layer: int) -> HookedRecurrentLM:
    """A 2-layer Elman model whose `layer` has W_hh = 0: it carries nothing from one position to the next."""
    model = small("elman", seed=1)
    with torch.no_grad():
        model.blocks[layer].mixer.weights[1].zero_()
    return model


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("still", [0, 1])
def test_a_layer_without_recurrence_carries_nothing_and_the_other_carries_all(still, path):
    model = without_recurrence(still)
    carrier = 1 - still
    df = path_patching(model, pair(length=6), METRIC, path=path)
    state = df[df.hook == "state"]
    assert state[state.layer == still].effect.abs().max() < 1e-12
    total = df[df.hook == "total"].set_index("position").effect
    carried = state[state.layer == carrier].set_index("position").effect
    assert (total - carried).abs().max() < 1e-12
    assert df[df.hook == "other"].effect.abs().max() < 1e-12  # no route hops between the layers' states
    assert total.abs().max() > 1e-3


@pytest.mark.parametrize("family", ["lstm", "s6"])
def test_one_layer_has_only_its_state(family):
    torch.manual_seed(2)
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=8, d_hidden=6, d_vocab=VOCAB, d_state=3)
    model = HookedRecurrentLM(cfg).double()
    df = path_patching(model, pair(length=5), METRIC, path="fused")
    assert df[df.hook == "other"].effect.abs().max() < 1e-12
    assert df[df.hook == "total"].effect.abs().max() > 1e-4


def test_a_run_with_itself_and_noising_and_the_heatmap():
    model = small("lstm")
    clean = pair().clean
    same = path_patching(model, Pair(clean, clean.clone()), METRIC)
    assert same.effect.abs().max() < 1e-12  # float64 rounding of a differently shaped batch
    p = Pair(clean, substitute_tokens(clean, {2: 0}))
    noising = path_patching(model, p, METRIC, direction="noising", sources=[1, 2], layers=[1])
    assert list(noising.hook) == ["total", "state", "other"] * 2 and set(noising.layer) == {-1, 1}
    assert noising[noising.position == 1].effect.abs().max() < 1e-12
    fig = patching_heatmap(noising, value="effect")
    assert len(fig.data) == 3


def test_bad_targets_and_sources():
    model, p = small("lstm"), pair()
    with pytest.raises(ValueError, match="no earlier position"):
        path_patching(model, p, METRIC, target=0)
    with pytest.raises(IndexError, match="target position 9"):
        path_patching(model, p, METRIC, target=9)
    with pytest.raises(IndexError, match="out of range"):
        path_patching(model, p, METRIC, sources=[4], target=3)
    with pytest.raises(UnknownHookError, match="unknown layer"):
        path_patching(model, p, METRIC, layers=[2])


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_adapters_split_paths_like_hand_written_hooks(family):
    pytest.importorskip("transformers")
    import workbench
    from tests.adapters.conftest import tiny
    model = workbench.from_transformers(tiny(family, torch.float64))
    clean = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    p = Pair(clean, substitute_tokens(clean, {2: 7}))
    df = path_patching(model, p, METRIC, sources=[1, 2], target=4, path="fused")
    for row in df[(df.position == 2) & (df.hook != "other")].itertuples():
        layer = None if row.hook == "total" else row.layer
        assert row.effect == pytest.approx(hand_written(model, p, 2, 4, layer, "fused"), abs=1e-9), row
    assert df[df.position == 1].effect.abs().max() < 1e-12
    assert df[df.position == 2].effect.abs().max() > 1e-6
