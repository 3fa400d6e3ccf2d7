"""Per-call hook scopes (workbench/models/hook_point.py): nesting, model-wide hooks, backward hooks."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.models.hook_point import current_scope

from .conftest import small_lm

EMBED = "hook_embed"


def test_nested_blocks_see_outer_hooks_and_drop_their_own_on_exit():
    model = small_lm("lstm")
    tokens = torch.arange(5)[None] % model.cfg.d_vocab
    order = []
    with model.hooks(fwd_hooks=[(EMBED, lambda x, hook: order.append("outer"))]):
        with model.hooks(fwd_hooks=[(EMBED, lambda x, hook: order.append("inner"))]):
            model(tokens)
            assert len(model.hook_dict[EMBED].fwd_hooks) == 2
        model(tokens)
        assert len(model.hook_dict[EMBED].fwd_hooks) == 1
    assert current_scope() is None and model.hook_dict[EMBED].fwd_hooks == []
    assert order == ["outer", "inner", "outer"]


def test_model_wide_hooks_run_first_and_stay_until_reset():
    model = small_lm("gru")
    tokens = torch.arange(5)[None] % model.cfg.d_vocab
    order = []
    model.add_hook(EMBED, lambda x, hook: order.append("model-wide"))
    model.run_with_hooks(tokens, fwd_hooks=[(EMBED, lambda x, hook: order.append("call"))])
    model(tokens)
    assert order == ["model-wide", "call", "model-wide"]
    with model.hooks(fwd_hooks=[(EMBED, lambda x, hook: order.append("kept"))], reset_hooks_end=False):
        pass
    model(tokens)
    assert order[-2:] == ["model-wide", "kept"]
    model.reset_hooks()
    model(tokens)
    assert order[-2:] == ["model-wide", "kept"] and len(order) == 5


def test_a_hook_on_every_name_by_predicate_and_an_error_inside_leave_nothing_behind():
    model = small_lm("s6")
    tokens = torch.arange(4)[None] % model.cfg.d_vocab
    seen = []
    states = (lambda name: name.endswith("hook_state"), lambda x, hook: seen.append(hook.name))
    with pytest.raises(RuntimeError, match="interrupted"), model.hooks(fwd_hooks=[states]):
        model(tokens)
        raise RuntimeError("interrupted")
    assert seen == ["blocks.0.mixer.hook_state", "blocks.1.mixer.hook_state"]
    assert all(not point.fwd_hooks for point in model.hook_dict.values())


def test_backward_hooks_see_the_gradient_at_the_hook_point_and_an_in_place_forward_edit_is_allowed():
    model = small_lm("lstm")
    tokens = torch.arange(6)[None] % model.cfg.d_vocab
    name = "blocks.0.hook_resid_post"
    grads = {}

    def edit_in_place(x, hook):
        x[:, 2] += 1.0

    loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(name, edit_in_place)],
                                bwd_hooks=[(name, lambda g, hook: grads.setdefault("g", g.clone()))])
    loss.backward()
    # the same gradient by autograd: a zero added at the hook point's output
    probe = torch.zeros(1, 6, model.cfg.d_model, dtype=torch.float64, requires_grad=True)

    def add_probe(x, hook):
        x = x.clone()
        x[:, 2] += 1.0
        return x + probe

    (expected,) = torch.autograd.grad(model.run_with_hooks(tokens, return_type="loss",
                                                           fwd_hooks=[(name, add_probe)]), probe)
    torch.testing.assert_close(grads["g"], expected)


def test_a_plain_transformer_lens_hook_point_is_refused():
    class Careless(HookedRecurrentLM):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.hook_extra = HookPoint()
            self.setup()

    with pytest.raises(TypeError, match="ScopedHookPoint"):
        Careless(RecurrentConfig(family="gru", n_layers=1, d_model=4, d_hidden=4, d_vocab=5))
