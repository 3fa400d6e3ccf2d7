"""`check_causal=True`: the probe passes causal hooks untouched and names what a non-causal one leaked."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import NonCausalHookError
from workbench.models import Edit, position_wise, read_only
from workbench.models.causality import MAX_PROBED_POSITIONS, leaked_positions

from .conftest import small_lm

C = "blocks.0.mixer.hook_c"


def push(x, hook):  # causal: changes positions >= 3
    x = x.clone()
    x[:, 3:] += 1.0
    return x


def cumulative(x, hook):  # causal: position t sums positions <= t
    return x.cumsum(1)


@pytest.mark.parametrize("path", ["fused", "reference"])
def test_causal_hooks_pass_and_give_the_same_result(path):
    model = small_lm("lstm")
    tokens = torch.arange(12)[None] % model.cfg.d_vocab
    for hook in (push, cumulative, position_wise(lambda x, hook, pos: x * 2), read_only(lambda x, hook: None)):
        plain = model.run_with_hooks(tokens, fwd_hooks=[(C, hook)], path=path)
        checked = model.run_with_hooks(tokens, fwd_hooks=[(C, hook)], path=path, check_causal=True)
        torch.testing.assert_close(checked, plain, rtol=0, atol=0)
    edited = model.run_with_edits(tokens, edits=[Edit(C, 4, "zero")], check_causal=True)  # Edits: causal by design
    assert edited.shape == (1, 12, model.cfg.d_vocab)


def test_a_flip_is_caught_with_the_positions_that_leaked():
    model = small_lm("gru")
    tokens = torch.arange(10)[None] % model.cfg.d_vocab
    with pytest.raises(NonCausalHookError) as error:
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mixer.hook_h", lambda x, hook: x + x.flip(1))],
                             check_causal=True)
    message = str(error.value)
    assert "'blocks.1.mixer.hook_h'" in message and "[0, 1, 2, 3, 4]" in message
    assert "input position 5 changed output position(s) [4]" in message


def test_a_look_ahead_of_one_position_is_caught_on_the_residual_stream_and_in_a_block():
    model = small_lm("mingru")
    tokens = torch.arange(6)[None] % model.cfg.d_vocab

    def peek(x, hook):  # position t reads t + 1
        return x + torch.roll(x, -1, dims=1)

    with pytest.raises(NonCausalHookError, match="blocks.0.hook_resid_pre"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", peek)], check_causal=True)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", peek)]):
        with pytest.raises(NonCausalHookError, match="blocks.0.hook_resid_pre"):
            model.run_with_cache(tokens, check_causal=True)
        model.run_with_cache(tokens)  # unchecked: runs


def test_long_inputs_are_probed_at_a_bounded_number_of_positions():
    calls = []

    def last_reads_first(x, hook):  # output at 0 depends on the last position
        calls.append(1)
        x = x.clone()
        x[:, 0] += x[:, -1]
        return x

    x = torch.randn(1, 1000, 3, dtype=torch.float64)
    leaks = leaked_positions(last_reads_first, x, None)
    assert leaks == {999: [0]}
    assert len(calls) == MAX_PROBED_POSITIONS + 1
