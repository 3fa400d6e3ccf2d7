"""Bad input fails early with a message that names the problem: mismatched shapes, unknown hooks and
layers, positions and channels out of range, metrics of the wrong shape, unknown directions."""

from __future__ import annotations

import pytest
import torch

from tests.analysis.patching.helpers import pair, small
from workbench.analysis.patching import (
    Pair,
    activation_patching,
    attribution_patching,
    knockout,
    logit_difference,
    noise_pair,
    patched_logits,
    substitute_tokens,
)
from workbench.errors import UnknownHookError

METRIC = logit_difference(1, 2)


@pytest.fixture(scope="module")
def model():
    return small("lstm")


@pytest.mark.parametrize("method", [activation_patching, attribution_patching])
def test_mismatched_shapes(model, method):
    p = pair()
    with pytest.raises(ValueError, match=r"clean tokens \[2, 6\] and corrupted tokens \[2, 5\] differ"):
        method(model, Pair(p.clean, p.corrupted[:, :5]), METRIC)
    with pytest.raises(ValueError, match=r"\[2, 6\] and corrupted tokens \[1, 6\]"):
        method(model, Pair(p.clean, p.corrupted[:1]), METRIC)


@pytest.mark.parametrize("method", [activation_patching, attribution_patching])
def test_unknown_hook_names_suggest_close_ones(model, method):
    with pytest.raises(UnknownHookError, match="did you mean 'resid_post'"):
        method(model, pair(), METRIC, hooks="resid_pots")
    with pytest.raises(UnknownHookError, match="unknown hook 'blocks.9.hook_resid_post'"):
        method(model, pair(), METRIC, hooks="blocks.9.hook_resid_post")
    with pytest.raises(UnknownHookError, match="unknown layer 5: the model has 2 layer"):
        method(model, pair(), METRIC, hooks="c", layers=[5])
    with pytest.raises(UnknownHookError, match="no position axis"):
        method(model, pair(), METRIC, hooks="blocks.0.mixer.hook_initial_c")


@pytest.mark.parametrize("method", [activation_patching, attribution_patching])
def test_positions_and_channels_out_of_range(model, method):
    with pytest.raises(IndexError, match=r"position 6 is out of range for 6 token\(s\)"):
        method(model, pair(), METRIC, positions=[0, 6])
    with pytest.raises(IndexError, match="position -7 is out of range"):
        method(model, pair(), METRIC, positions=-7)
    with pytest.raises(IndexError, match=r"channel\(s\) \[10\] out of range .* 10 channels"):
        method(model, pair(), METRIC, hooks="c", channels=[10])


def test_metrics_must_give_one_number_per_row(model):
    with pytest.raises(TypeError, match=r"must return one number per batch row, \[2\]"):
        activation_patching(model, pair(), lambda logits: logits[:, -1, 0].sum())
    with pytest.raises(TypeError, match="metric must be a callable"):
        activation_patching(model, pair(), "logit_diff")
    with pytest.raises(IndexError, match="metric position 9 is out of range"):
        activation_patching(model, pair(), logit_difference(1, 2, position=9))


def test_other_bad_arguments(model):
    with pytest.raises(ValueError, match="unknown direction 'both'"):
        activation_patching(model, pair(), METRIC, direction="both")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        activation_patching(model, pair(), METRIC, batch_size=0)
    with pytest.raises(ValueError, match="outside the vocabulary 0..6"):
        activation_patching(model, Pair(pair().clean, pair().clean + 7), METRIC)
    with pytest.raises(TypeError, match="integer token ids"):
        activation_patching(model, Pair(torch.zeros(1, 4), torch.zeros(1, 4)), METRIC)
    with pytest.raises(IndexError, match="position 8 is out of range"):
        substitute_tokens(pair().clean, {8: 1})
    with pytest.raises(IndexError, match="position 9 is out of range"):
        noise_pair(model, pair().clean, positions=[9])
    with pytest.raises(ValueError, match="unknown ablation 'random'"):
        knockout(model, pair().clean, METRIC, "c", ablation="random")
    with pytest.raises(ValueError, match="names 2 sites"):
        patched_logits(model, pair(), "c")
