"""Flow knockout s → t: the removed term against the layer's own recurrence run with v_s zeroed and
the gates held (`LinearForm.recur`, a loop independent of the maps), the edit against the recorded
run, and the joint knockout against a hand-written bottom-up one."""

from __future__ import annotations

import pytest
import torch

from tests.analysis.patching.helpers import pair, small
from workbench.analysis.implicit_attention.api import family_of, record
from workbench.analysis.patching import flow_knockout, logit_difference
from workbench.analysis.patching.flow import AddAt, removed_output
from workbench.utils import get_act_name

FAMILIES = ("lstm", "gru", "mingru", "minlstm", "s6")
METRIC = logit_difference(1, 2)


def expected_change(model, cache, layer: int, t: int, s: int) -> torch.Tensor:
    """mixer_out's change at t [batch, d_model] from the layer rerun with v_s = 0, gates held fixed."""
    form = family_of(model).form(model, cache, layer, "exact")
    value = form.value.clone()
    value[:, :, s] = 0
    new, old = form.recur(value)[:, :, t], form.output[:, :, t]  # [b, d]
    if model.cfg.family == "lstm":  # read through h = o tanh(c), then W_out
        o = cache[get_act_name("o", layer)][:, t]
        return (o * torch.tanh(new) - o * torch.tanh(old)) @ model.blocks[layer].mixer.W_out.weight.detach().T
    return (new - old) @ form.projection.T


@pytest.mark.parametrize("family", FAMILIES)
def test_the_removed_term_is_the_recurrence_without_the_source(family):
    model = small(family)
    tokens, t = pair(length=7).clean, 6
    cache = record(model, tokens, [0, 1], "exact")
    for layer in (0, 1):
        got = removed_output(model, layer, cache, t, [0, 3, 6])  # [b, 3, d_model]
        for c, s in enumerate((0, 3, 6)):
            torch.testing.assert_close(got[:, c], expected_change(model, cache, layer, t, s), atol=1e-12, rtol=0)
        assert got.abs().max() > 1e-6


@pytest.mark.parametrize("path", ["reference", "fused"])
@pytest.mark.parametrize("family", ["lstm", "s6"])
def test_each_row_is_its_own_hooked_run_and_only_the_read_at_t_changes(family, path):
    model = small(family)
    tokens = pair(length=7).clean
    df = flow_knockout(model, tokens, METRIC, target=5, path=path)
    assert len(df) == 2 * 6 and df.attrs["target"] == 5
    cache = record(model, tokens[:, :6], [0, 1], "exact")
    state = get_act_name("c" if family == "lstm" else "state", 1)
    with torch.no_grad():
        plain_logits, plain = model.run_with_cache(tokens[:, :6], names_filter=state, path=path)
    for row in df.itertuples():
        delta = removed_output(model, row.layer, cache, 5, [row.position])[:, 0]  # [b, d_model]
        hook = AddAt(delta, 5)
        with torch.no_grad(), model.hooks(fwd_hooks=[(row.name, hook)]):
            logits, knocked = model.run_with_cache(tokens[:, :6], names_filter=state, path=path)
        assert row.effect == pytest.approx(float(METRIC(logits).mean() - METRIC(plain_logits).mean()), abs=1e-10)
        torch.testing.assert_close(logits[:, :5], plain_logits[:, :5], atol=1e-12, rtol=0)
        if row.layer == 1:  # the layer's own state at t keeps s's write: only its read changed
            torch.testing.assert_close(knocked[state], plain[state], atol=1e-12, rtol=0)
    assert df.effect.abs().max() > 1e-4


@pytest.mark.parametrize("family", ["lstm", "mingru"])
def test_together_is_the_bottom_up_joint_knockout(family):
    model = small(family)
    tokens, t = pair(length=6).clean, 5
    df = flow_knockout(model, tokens, METRIC, sources=[2, 4], together=True)
    assert list(df.layer) == [-1, -1] and list(df.name) == ["all layers"] * 2
    alone = flow_knockout(model, tokens, METRIC, sources=[2, 4], layers=[1], together=True)
    assert alone.effect.tolist() == pytest.approx(
        flow_knockout(model, tokens, METRIC, sources=[2, 4], layers=[1]).effect.tolist(), abs=1e-12)
    names = family_of(model).hook_names(1, "exact", model)
    for row in df.itertuples():
        low = AddAt(removed_output(model, 0, record(model, tokens, [0], "exact"), t, [row.position])[:, 0], t)
        with torch.no_grad(), model.hooks(fwd_hooks=[(get_act_name("mixer_out", 0), low)]):
            _, upper = model.run_with_cache(tokens, names_filter=names)
        high = AddAt(removed_output(model, 1, dict(upper), t, [row.position])[:, 0], t)
        hooks = [(get_act_name("mixer_out", 0), low), (get_act_name("mixer_out", 1), high)]
        with torch.no_grad():
            expected = METRIC(model.run_with_hooks(tokens, fwd_hooks=hooks)).mean() - METRIC(model(tokens)).mean()
        assert row.effect == pytest.approx(float(expected), abs=1e-10)


def test_families_without_a_form_point_to_path_patching():
    with pytest.raises(NotImplementedError, match="path_patching"):
        flow_knockout(small("elman"), pair().clean, METRIC)


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_mamba_adapter_knockout_equals_its_recurrence(path):
    transformers = pytest.importorskip("transformers")  # noqa: F841
    import workbench
    from tests.adapters.conftest import tiny
    model = workbench.from_transformers(tiny("mamba", torch.float64))
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    cache = record(model, tokens, [0], "exact")
    form = family_of(model).form(model, cache, 0, "exact")
    value = form.value.clone()
    value[:, :, 2] = 0
    expected = (form.recur(value)[:, :, 5] - form.output[:, :, 5]) @ form.projection.T
    torch.testing.assert_close(removed_output(model, 0, cache, 5, [2])[:, 0], expected, atol=1e-12, rtol=0)
    df = flow_knockout(model, tokens, logit_difference(4, 5), sources=[2, 5], path=path)
    assert df.effect.abs().max() > 0 and set(df.layer) == set(range(len(model.blocks)))
