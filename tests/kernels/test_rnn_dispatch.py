"""`fastest_rnn_recording` picks the Elman / LSTM / GRU fused kernel exactly as the mixers report it."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels import dispatch
from workbench.kernels.cpu_compiled import compiled_kernels_available
from workbench.kernels.dispatch import fastest_rnn_recording, step_matmul_backend
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import ElmanMixer, GRUMixer, LSTMMixer
from workbench.models.recurrence import record_every_hook

MIXERS = {"elman": ElmanMixer, "lstm": LSTMMixer, "gru": GRUMixer}
LIBRARY = {
    "elman": ("torch.nn.RNN (cpu) + parallel pre-activation recovery",) * 2,
    "lstm": ("torch.nn.LSTM (cpu)", "torch.nn.LSTM (cpu) + parallel gate recovery"),
    "gru": ("torch.nn.GRU (cpu)", "torch.nn.GRU (cpu) + parallel gate recovery"),
}
COMPILED = {
    "elman": "compiled C++ pre-activation-writing Elman loop (CPU, no grad)",
    "lstm": "compiled C++ gate-writing LSTM loop (CPU, no grad)",
    "gru": "compiled C++ gate-writing GRU loop (CPU, no grad)",
}
LOOP = {
    "elman": "pre-activation-writing Elman loop (CPU, no grad, {})",
    "lstm": "gate-writing LSTM loop (CPU, no grad, {})",
    "gru": "gate-writing GRU loop (CPU, no grad, {})",
}


def setup(family: str, batch: int = 2, width: int = 8):
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=width, d_hidden=width, d_vocab=5)
    mixer = MIXERS[family](cfg)
    x = torch.randn(batch, 6, width)  # [batch, pos, d_model]
    state = mixer.zero_state(batch, x.device, x.dtype)
    return mixer, x, state


def choose(family: str, gates: bool, batch: int = 2, width: int = 8) -> str:
    mixer, x, state = setup(family, batch, width)
    name, _ = fastest_rnn_recording(family, x, state, gates, width, tuple(mixer.parameters()))
    return name


@pytest.mark.parametrize("family", list(MIXERS))
def test_gradients_wanted_take_the_library_kernel(family):
    assert choose(family, gates=False) == LIBRARY[family][0]
    assert choose(family, gates=True) == LIBRARY[family][1]


@pytest.mark.parametrize("family", list(MIXERS))
def test_without_gradients_gates_take_the_compiled_loop_at_any_width(family):
    if not compiled_kernels_available():
        pytest.skip("compiled CPU kernels not built here")
    with torch.no_grad():
        assert choose(family, gates=True, batch=1, width=8) == COMPILED[family]
        assert choose(family, gates=False) == LIBRARY[family][0]  # h alone: the library kernel


@pytest.mark.parametrize("family", list(MIXERS))
def test_without_compiled_kernels_width_picks_loop_or_recovery(family, monkeypatch):
    monkeypatch.setenv("WORKBENCH_NO_COMPILED", "1")
    with torch.no_grad():
        assert choose(family, gates=True, batch=2, width=8) == LIBRARY[family][1]
        monkeypatch.setattr(dispatch, "RECORDING_LOOP_MIN_WIDTH", 16)
        x = torch.zeros(2, 1, 8)
        assert choose(family, gates=True, batch=2, width=8) == LOOP[family].format(step_matmul_backend(x))
    assert choose(family, gates=True, batch=2, width=8) == LIBRARY[family][1]  # grad wanted again


@pytest.mark.parametrize("family", list(MIXERS))
@pytest.mark.parametrize("route", ["compiled", "loop", "library"])
def test_every_route_matches_the_reference_and_reports_its_name(family, route, monkeypatch):
    if route == "compiled" and not compiled_kernels_available():
        pytest.skip("compiled CPU kernels not built here")
    if route != "compiled":
        monkeypatch.setenv("WORKBENCH_NO_COMPILED", "1")
    if route == "loop":
        monkeypatch.setattr(dispatch, "RECORDING_LOOP_MIN_WIDTH", 0)
    mixer, x, state = setup(family)
    state = {k: torch.randn_like(v) for k, v in state.items()}
    store = record_every_hook(mixer, {})  # every gate hooked, so every gate is recorded
    with torch.no_grad():
        ref_out, ref_final = mixer(x, state, "reference")
        reference = dict(store)
        out, final = mixer(x, state, "fused")
    expected = {"compiled": COMPILED, "loop": LOOP, "library": {f: LIBRARY[f][1] for f in LIBRARY}}[route]
    assert mixer.last_kernel == expected[family].format(step_matmul_backend(x))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name in ref_final:
        torch.testing.assert_close(final[name], ref_final[name], atol=1e-5, rtol=1e-5)
    for name, value in reference.items():
        torch.testing.assert_close(store[name], value, atol=1e-5, rtol=1e-5)
