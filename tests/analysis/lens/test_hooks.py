"""Lenses see the run as hooks leave it (tuned-lens#61): a steered or patched run is lensed as modified,
whether the hooks are attached with `model.hooks(...)`, `add_hook` or passed as `fwd_hooks` / `edits`."""

import pytest
import torch

from workbench.analysis.lens import LogitLens, TunedLens, evaluate_lenses, prediction_trajectory
from workbench.analysis.planted import planted_affine_lm
from workbench.analysis.steering import Steer, SteeringVector, steering
from workbench.models import Edit
from workbench.utils import get_act_name

TEXT = "def f(a, b):\n    return (a + b) * 2\n"


@pytest.fixture(scope="module")
def model():
    return planted_affine_lm(family="lstm", n_layers=3, d_model=8, norm="layernorm", seed=7)


@pytest.fixture(scope="module")
def lens(model):
    lens = TunedLens.from_model(model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for translator in lens.translators:
            translator.weight.copy_(0.2 * torch.randn(translator.weight.shape, generator=generator))
            translator.bias.copy_(0.2 * torch.randn(translator.bias.shape, generator=generator))
    return lens


def _delta(model):
    return 2.0 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(11))


def _add(delta):
    def hook(resid, hook):  # resid [batch, pos, d_model]
        return resid + delta
    return hook


def _readouts_by_hand(model, lens, fwd_hooks):
    """Each read-out lensed from a cache recorded inside run_with_hooks: the reference."""
    recorded = {}

    def keep(name):
        def hook(x, hook):
            recorded[name] = x.detach().clone()
        return hook

    names = list(lens.hooks().values())
    logits = model.run_with_hooks(model.to_tokens(TEXT),
                                  fwd_hooks=[*fwd_hooks, *((n, keep(n)) for n in names)])
    rows = [lens(recorded[lens.hooks()[layer]][0], layer).log_softmax(-1) for layer in lens.layers]
    return torch.stack(rows), logits[0].log_softmax(-1)


@pytest.mark.parametrize("attach", ["context", "argument", "add_hook"])
def test_a_steering_hook_changes_the_lens_exactly_as_it_changes_the_run(model, lens, attach):
    hook_name = get_act_name("resid_post", 0)
    fwd_hooks = [(hook_name, _add(_delta(model)))]
    plain = prediction_trajectory(lens, TEXT)
    if attach == "context":
        with model.hooks(fwd_hooks=fwd_hooks):
            steered = prediction_trajectory(lens, TEXT)
    elif attach == "argument":
        steered = prediction_trajectory(lens, TEXT, fwd_hooks=fwd_hooks)
    else:
        model.add_hook(*fwd_hooks[0])
        try:
            steered = prediction_trajectory(lens, TEXT)
        finally:
            model.reset_hooks(including_permanent=False)
    expected, expected_model = _readouts_by_hand(model, lens, fwd_hooks)
    torch.testing.assert_close(torch.from_numpy(steered.log_probs), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(torch.from_numpy(steered.model_log_probs), expected_model, atol=1e-5, rtol=1e-6)
    # the embedding read-out is upstream of the edit; block 0 and everything after it moved
    assert (steered.log_probs[0] == plain.log_probs[0]).all()
    for r in range(1, len(lens.layers)):
        assert abs(steered.log_probs[r] - plain.log_probs[r]).max() > 1e-2
    # the last read-out is the steered model's own output
    torch.testing.assert_close(torch.from_numpy(steered.log_probs[-1]), expected_model, atol=1e-5, rtol=1e-6)


def test_the_workbenchs_steering_context_is_lensed(model, lens):
    hook_name = get_act_name("resid_post", 1)
    vector = SteeringVector(hook=hook_name, vector=_delta(model), reference_norm=1.0)
    steer = Steer(vector, multiplier=1.5, positions=slice(10, None))
    with steering(model, steer):
        steered = prediction_trajectory(LogitLens(model), TEXT)
    plain = prediction_trajectory(LogitLens(model), TEXT)
    moved = abs(steered.log_probs - plain.log_probs).max(-1)  # [n_readouts, pos]
    assert (moved[:2] == 0).all()  # embed, block 0: upstream
    assert (moved[2:, :10] == 0).all() and (moved[2:, 10:] > 1e-3).all()  # blocks 1, 2 from position 10
    def by_hand(x, hook):  # x [batch, pos, d_model]
        return torch.cat([x[:, :10], x[:, 10:] + 1.5 * vector.vector], 1)

    expected, _ = _readouts_by_hand(model, LogitLens(model), [(hook_name, by_hand)])
    torch.testing.assert_close(torch.from_numpy(steered.log_probs), expected, atol=1e-5, rtol=1e-6)


def test_an_edit_on_the_recurrent_state_is_lensed_causally(model, lens):
    cell = get_act_name("c", 1)
    edit = Edit(cell, positions=12, op="set", value=3.0)
    edited = prediction_trajectory(lens, TEXT, edits=[edit])
    plain = prediction_trajectory(lens, TEXT)
    moved = abs(edited.log_probs - plain.log_probs).max(-1)  # [n_readouts, pos]
    assert (moved[:2] == 0).all() and (moved[2:, :12] == 0).all() and (moved[2:, 12:] > 0).all()
    logits = model.run_with_edits(model.to_tokens(TEXT), edits=[Edit(cell, positions=12, op="set", value=3.0)])
    torch.testing.assert_close(torch.from_numpy(edited.model_log_probs), logits[0].log_softmax(-1),
                               atol=1e-5, rtol=1e-6)


def test_evaluation_scores_lenses_against_the_modified_run(model, lens):
    fwd_hooks = [(get_act_name("resid_post", 0), _add(_delta(model)))]
    text = TEXT * 8
    plain = evaluate_lenses(model, text, [lens], batch_size=2, seq_len=64)
    steered = evaluate_lenses(model, text, [lens], batch_size=2, seq_len=64, fwd_hooks=fwd_hooks)
    with model.hooks(fwd_hooks=fwd_hooks):
        in_context = evaluate_lenses(model, text, [lens], batch_size=2, seq_len=64)
    assert steered.table.equals(in_context.table)
    assert steered.model_ce_bits != pytest.approx(plain.model_ce_bits, abs=1e-3)
    kl = steered.metric("kl_bits")["tuned lens"]
    assert kl.loc["2"] == pytest.approx(0.0, abs=1e-6)  # the last read-out is the steered output itself
    # the embedding read-out is upstream of the edit: its predictions, and so its cross-entropy, are the
    # same, but it is scored against the steered output
    ce, plain_ce = steered.metric("ce_bits")["tuned lens"], plain.metric("ce_bits")["tuned lens"]
    assert ce.loc["embed"] == pytest.approx(plain_ce.loc["embed"], abs=1e-9)
    assert abs(ce.loc["1"] - plain_ce.loc["1"]) > 1e-3
    assert abs(kl.loc["embed"] - plain.metric("kl_bits")["tuned lens"].loc["embed"]) > 1e-3
