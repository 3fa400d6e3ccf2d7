"""Activation patching: a run patched with itself is unchanged, every cell of a batched sweep equals
its own `run_with_hooks` call, and denoising the last residual stream everywhere gives the clean run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.analysis.patching.helpers import check_cells, hooks_of, pair, small
from workbench.analysis.patching import (
    COLUMNS,
    Pair,
    activation_patching,
    kl_to_clean,
    logit_difference,
    noise_pair,
    patched_logits,
    patching_heatmap,
    target_probability,
)
from workbench.models import MIXER_FAMILIES

PATHS = ("reference", "fused")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", MIXER_FAMILIES)
def test_patching_a_run_with_itself_changes_nothing(family, path):
    model = small(family)
    clean = pair().clean
    for direction in ("denoising", "noising"):
        df = activation_patching(model, Pair(clean, clean), logit_difference(1, 2), hooks=hooks_of(model),
                                 direction=direction, batch_size=4, path=path)
        assert list(df.columns) == list(COLUMNS)
        assert len(df) == 2 * 5 * 6  # layers x hooks x positions
        assert df.effect.abs().max() < 1e-12
        assert df.normalized_effect.isna().all()  # no gap between the runs to normalise by


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", MIXER_FAMILIES)
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_every_cell_equals_its_own_run_with_hooks_call(family, path, direction):
    model = small(family)
    p = pair()
    metric = logit_difference([1, 3], [2, 0], position=-1)
    hooks = hooks_of(model)
    df = activation_patching(model, p, metric, hooks=hooks, direction=direction, batch_size=4, path=path)
    source, target = (p.clean, p.corrupted) if direction == "denoising" else (p.corrupted, p.clean)
    check_cells(model, source, target, df, metric, path)
    assert df.effect.abs().max() > 1e-3  # the corruption matters somewhere


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", MIXER_FAMILIES)
def test_denoising_the_last_residual_stream_everywhere_gives_the_clean_metric(family, path):
    model = small(family)
    p = pair()
    with torch.no_grad():
        clean_logits = model(p.clean, path=path)
    for metric in (logit_difference(1, 2), target_probability(3), kl_to_clean(clean_logits)):
        logits = patched_logits(model, p, "resid_post", layer=1, path=path)
        torch.testing.assert_close(metric(logits), metric(clean_logits), rtol=0, atol=1e-10)


def test_every_channel_is_the_whole_activation_and_a_subset_is_not():
    """channels= patches part of the first per-position dimension: all of them is the whole patch."""
    model = small("lstm")
    p = pair()
    metric = logit_difference(1, 2)
    whole = activation_patching(model, p, metric, hooks="c", layers=[0], positions=[2])
    every = activation_patching(model, p, metric, hooks="c", layers=[0], positions=[2], channels=range(10))
    half = activation_patching(model, p, metric, hooks="c", layers=[0], positions=[2], channels=[0, 1, 2])
    assert every.effect.iloc[0] == pytest.approx(whole.effect.iloc[0], abs=1e-12)
    assert half.effect.iloc[0] != pytest.approx(whole.effect.iloc[0], abs=1e-9)


@pytest.mark.parametrize("which", ["kl", "probability"])
def test_every_metric_tiles_over_the_batched_copies(which):
    model = small("minlstm")
    p = pair()
    with torch.no_grad():
        clean_logits = model(p.clean)
    metric = kl_to_clean(clean_logits) if which == "kl" else target_probability([2, 5], position=-2)
    one = activation_patching(model, p, metric, hooks=["resid_post", "h"], batch_size=1)
    many = activation_patching(model, p, metric, hooks=["resid_post", "h"], batch_size=6)
    pd.testing.assert_frame_equal(one, many, atol=1e-12, rtol=0)
    position = 5 if which == "kl" else 4  # the read-out position of the last layer restores the clean run
    last = many[(many.hook == "resid_post") & (many.layer == 1) & (many.position == position)]
    assert float(last.normalized_effect.iloc[0]) == pytest.approx(1.0, abs=1e-9)
    if which == "kl":
        assert many.attrs["clean_metric"] == pytest.approx(0.0, abs=1e-12)


def test_the_sweep_does_not_depend_on_the_batch_size():
    model = small("gru")
    p = pair()
    metric = logit_difference(1, 2)
    one = activation_patching(model, p, metric, hooks=["h", "resid_post"], batch_size=1)
    many = activation_patching(model, p, metric, hooks=["h", "resid_post"], batch_size=64)
    pd.testing.assert_frame_equal(one, many, atol=1e-12, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_embedding_noise_is_the_same_in_every_batched_copy(path):
    model = small("s6")
    tokens = pair().clean
    p = noise_pair(model, tokens, positions=[0, 1], scale=3.0, seed=1)
    metric = logit_difference(1, 2)
    df = activation_patching(model, p, metric, hooks="resid_pre", layers=[0], batch_size=6, path=path)
    # denoising the embedding stream at the noised positions restores the clean run exactly
    logits = patched_logits(model, p, "resid_pre", layer=0, positions=[0, 1], path=path)
    with torch.no_grad():
        torch.testing.assert_close(metric(logits), metric(model(tokens, path=path)), rtol=0, atol=1e-10)
    resumed = activation_patching(model, p, metric, hooks="resid_pre", layers=[0], batch_size=2, path=path)
    pd.testing.assert_frame_equal(resumed, df, atol=1e-12, rtol=0)  # batches resume mid-noise

    def plain(x, hook, noise=p.corrupted_hooks[0][1]):  # the same noise, but a hook that cannot resume
        return noise(x, hook)

    rerun = activation_patching(model, Pair(p.clean, p.corrupted, corrupted_hooks=(("hook_embed", plain),)),
                                metric, hooks="resid_pre", layers=[0], batch_size=2, path=path)
    pd.testing.assert_frame_equal(rerun, df, atol=1e-12, rtol=0)
    untouched = df[df.position >= 2]
    assert untouched.effect.abs().max() < 1e-12  # no noise there: patching clean over clean
    assert df.attrs["clean_metric"] != pytest.approx(df.attrs["corrupted_metric"])


def test_the_heatmap_has_one_panel_per_hook():
    model = small("lstm")
    df = activation_patching(model, pair(), logit_difference(1, 2), hooks=["resid_post", "c"])
    fig = patching_heatmap(df, labels=[str(t) for t in pair().clean[0].tolist()])
    assert len(fig.data) == 2
    assert fig.data[0].z.shape == (2, 6)
