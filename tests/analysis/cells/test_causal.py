"""push_effects on the embedded LSTM: the effect it reports is the one a hook gives, and a
saturated cell (tanh(c) = ±1) moves nothing while the unit it ranks first moves the predictions."""

import numpy as np
import pytest
import torch

import workbench
from workbench.analysis.cells.causal import push_effects

TEXT = '''def scale(values, factor=2):
    """Multiply every value (a list) by factor."""
    return [factor * (v + 1) for v in values]
'''


@pytest.fixture(scope="module")
def model():
    return workbench.load("lstm-stdlib-2x128")


def test_push_effects_match_a_hook_and_rank_a_saturated_cell_last(model):
    position = TEXT.index("[")
    effects = push_effects(model, TEXT, [position], layer=0, delta=5.0, horizon=len(TEXT))[0]  # [units]
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        base, cache = model.run_with_cache(tokens)
    c = cache["blocks.0.mixer.hook_c"][0, position]  # [units]
    unit = int(np.argmax(effects))

    def push(value, hook):
        value[:, position, unit] += 5.0
        return value

    with torch.no_grad():
        edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_c", push)])
    change = (edited.log_softmax(-1) - base.log_softmax(-1)).abs().amax(-1)[0]  # [pos]
    assert float(change[:position].max()) < 1e-5  # causal: nothing before the edit moves
    assert float(change[position:].max()) == pytest.approx(float(effects[unit]), rel=1e-3, abs=1e-5)
    assert effects[unit] > 0.1
    saturated = int(c.abs().argmax())
    assert abs(float(c[saturated])) > 5 and effects[saturated] < 1e-3


def test_push_effects_names_a_bad_position(model):
    with pytest.raises(IndexError, match="outside the text"):
        push_effects(model, "def f():\n", [50])
    with pytest.raises(ValueError, match="no positions"):
        push_effects(model, "def f():\n", [])
