"""The MIPS RNN keeps the hook contract: an edit to its hidden state at t changes later outputs only."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.mips.rnn import MipsRNN, RNNSpec


@pytest.mark.parametrize("family", ["linear", "tanh", "gru"])
def test_hidden_state_edit_is_causal(family):
    spec = RNNSpec(family=family, d_hidden=3, seed=0)
    model = MipsRNN(d_input=2, d_output=1, spec=spec)
    x = torch.randn(2, 8, 2, dtype=torch.float64)
    clean = model(x)

    def push(h, hook):
        h[:, 4] = h[:, 4] + 0.5
        return h

    edited = model.run_with_hooks(x, fwd_hooks=[("hook_h", push)])
    change = (edited - clean).abs().amax(dim=(0, 2))  # [pos]
    assert torch.all(change[:4] == 0)
    assert torch.all(change[4:] > 0), "the edit was not carried to later states"
