"""Gate saturation fractions (paper Fig. 3) equal a direct computation from the cached gates."""

import numpy as np
import pytest
import torch

from workbench.analysis.cells import gate_saturation, printable_tokenizer, record, saturation_fractions
from workbench.models import HookedRecurrentLM, RecurrentConfig

TEXT = "def f(x):\n    return [x * 2 for x in range(10)]\n" * 4


def lstm_with_controlled_gates():
    """Units 0-3 forget gate bias +50 (always open), units 4-7 input gate bias -50 (always shut)."""
    tok = printable_tokenizer()
    torch.manual_seed(0)
    model = HookedRecurrentLM(RecurrentConfig(family="lstm", n_layers=2, d_model=16, d_hidden=16,
                                              d_vocab=len(tok)))
    model.tokenizer = tok
    H = 16
    with torch.no_grad():
        cell = model.blocks[1].mixer.cell
        cell.bias_ih_l0[H : H + 4] = 50.0  # f, units 0-3
        cell.bias_ih_l0[4:8] = -50.0  # i, units 4-7
    return model


def test_fractions_equal_direct_computation_from_the_cache():
    model = lstm_with_controlled_gates()
    sat = gate_saturation(model, TEXT)
    _, cache = model.run_with_cache(model.to_tokens(TEXT))
    for layer in (0, 1):
        for gate in ("i", "f", "o"):
            g = cache[f"blocks.{layer}.mixer.hook_{gate}"][0].numpy()  # [pos, H]
            np.testing.assert_allclose(sat.left[(layer, gate)], (g < 0.1).mean(0))
            np.testing.assert_allclose(sat.right[(layer, gate)], (g > 0.9).mean(0))
    assert sat.n_positions == len(TEXT)


def test_huge_biases_saturate_exactly_those_units():
    sat = gate_saturation(lstm_with_controlled_gates(), TEXT, layers=[1])
    np.testing.assert_array_equal(sat.right[(1, "f")][:4], 1.0)
    np.testing.assert_array_equal(sat.left[(1, "i")][4:8], 1.0)
    assert sat.right[(1, "f")][4:].max() < 1.0
    assert set(sat.left) == {(1, "i"), (1, "f"), (1, "o")}
    summary = {(r["layer"], r["gate"]): r for r in sat.summary()}
    assert summary[(1, "f")]["mostly_right"] >= 4 and summary[(1, "i")]["mostly_left"] >= 4


def test_saturation_from_a_recording_matches_the_model_call():
    model = lstm_with_controlled_gates()
    rec = record(model, TEXT, ["i", "f", "o", "c"], [1])
    a, b = gate_saturation(rec), gate_saturation(model, TEXT, layers=1)
    for key in b.left:
        np.testing.assert_array_equal(a.left[key], b.left[key])
    assert len(a.to_frame()) == 3 * 16


def test_gru_gates_and_families_without_gates():
    tok = printable_tokenizer()
    gru = HookedRecurrentLM(RecurrentConfig(family="gru", n_layers=1, d_model=8, d_hidden=8,
                                            d_vocab=len(tok)))
    sat = gate_saturation(gru, TEXT, tokenizer=tok)
    assert set(sat.left) == {(0, "r"), (0, "z")}
    elman = HookedRecurrentLM(RecurrentConfig(family="elman", n_layers=1, d_model=8, d_hidden=8,
                                              d_vocab=len(tok)))
    with pytest.raises(ValueError, match="no sigmoid gates"):
        gate_saturation(elman, TEXT, tokenizer=tok)


def test_saturation_fractions_checks_its_input():
    left, right = saturation_fractions(np.array([[0.05, 0.5], [0.95, 0.99]]))
    np.testing.assert_array_equal(left, [0.5, 0.0])
    np.testing.assert_array_equal(right, [0.5, 0.5])
    with pytest.raises(ValueError):
        saturation_fractions(np.zeros((0, 3)))
