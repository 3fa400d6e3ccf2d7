"""FSM extraction on hand-built RNNs with known states, and minimisation of a planted automaton."""

import numpy as np
import torch

from workbench.analysis.mips import extract_program
from workbench.analysis.mips.fsm import fsm_from_labels, minimize, planted_fsm_run
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import TrainedRNN
from workbench.analysis.mips.verify import verify_program


def _hand_built(task_name: str, spec: RNNSpec, w, u, b, v, c) -> TrainedRNN:
    task = get_task(task_name)
    model = MipsRNN(len(u[0]), len(v), spec)
    with torch.no_grad():
        model.W.copy_(torch.tensor(w, dtype=torch.float64))
        model.U.copy_(torch.tensor(u, dtype=torch.float64))
        model.b.copy_(torch.tensor(b, dtype=torch.float64))
        model.readout.weight.copy_(torch.tensor(v, dtype=torch.float64))
        model.readout.bias.copy_(torch.tensor(c, dtype=torch.float64))
    return TrainedRNN(task, spec, model, None, 1.0, 0, 0.0)


def test_hand_built_tanh_shift_register_gives_the_known_four_state_machine():
    # h1 = tanh(5 (2x - 1)) holds the current bit, h2 = tanh(5 h1_prev) the previous one; y = x_{t-1}
    trained = _hand_built(
        "Bit_Shift_Right", RNNSpec("tanh", 2), [[0, 0], [5, 0]], [[10], [0]], [-5, 0], [[0, 0.5]], [0.45]
    )
    fsm, program = extract_program(trained)
    assert fsm.n_states == 4 and fsm.contradictions == 0
    # the machine remembers (previous bit, current bit) and emits the previous bit
    assert sorted(o[0] for o in fsm.out) == [0, 0, 1, 1]
    assert verify_program(program.source, "Bit_Shift_Right").passed


def test_hand_built_linear_counter_gives_one_integer_state_and_the_running_sum():
    trained = _hand_built(
        "Sum_All", RNNSpec("linear", 1, bias=False), [[1.0]], [[0.5]], [0.0], [[2.0]], [0.0]
    )
    lattice, program = extract_program(trained)
    assert lattice.rank == 1 and "z0 = x + z0" in program.source
    assert verify_program(program.source, "Sum_All").passed


def test_minimiser_returns_the_planted_minimal_machine():
    # parity with each state duplicated: 4 states, minimal machine has 2
    delta = np.array([[0, 3], [1, 2], [2, 1], [3, 0]])  # 0,1 even; 2,3 odd; start 0
    out = [(0,), (0,), (1,), (1,)]
    sym = np.random.default_rng(0).integers(0, 2, size=(200, 12))
    labels = planted_fsm_run(delta, out, 0, sym)
    y = np.array(out)[labels]
    fsm = fsm_from_labels(labels, 0, sym, y, [0, 1])
    small = minimize(fsm)
    assert fsm.contradictions == 0 and small.n_states == 2
    assert small.run([1, 1, 0, 1]) == [1, 0, 0, 1]


def test_contradictory_transitions_are_counted():
    outputs = np.zeros((2, 2, 1), int)
    clean = fsm_from_labels(np.array([[1, 2], [1, 2]]), 0, np.array([[0, 0], [0, 1]]), outputs, [0, 1])
    assert clean.contradictions == 0
    # from state 1 on symbol 0 the data go once to state 2 and once to state 3
    bad = fsm_from_labels(np.array([[1, 2], [1, 3]]), 0, np.array([[0, 0], [0, 0]]), outputs, [0, 1])
    assert bad.contradictions == 1


def test_contradictions_say_how_much_data_they_overrule():
    outputs = np.zeros((3, 2, 1), int)
    # from state 1 on symbol 0: twice to state 2, once to state 3; outputs all agree
    fsm = fsm_from_labels(np.array([[1, 2], [1, 2], [1, 3]]), 0, np.zeros((3, 2), int), outputs, [0, 1])
    assert fsm.contradictions == 1 and fsm.outvoted == 1
    assert fsm.observations == 6 + 6  # six transitions and six outputs
    assert "1 of 12 observed" in fsm.describe_contradictions()
    assert minimize(fsm).outvoted == 1
    clean = fsm_from_labels(np.array([[1, 2]]), 0, np.zeros((1, 2), int), np.zeros((1, 2, 1), int), [0, 1])
    assert clean.describe_contradictions().startswith("no contradictions")
