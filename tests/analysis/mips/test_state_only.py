"""MIPS state-only reading: an exact integer state under an inexact readout, readout synthesised from the task."""

import numpy as np
import pytest
import torch

from workbench.analysis.mips.lattice import Lattice, LatticeError, lattice_candidates
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec
from workbench.analysis.mips.synthesis import program_from_lattice
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import TrainedRNN, candidate_specs, predict
from workbench.analysis.mips.verify import verify_program


def _counter_net(decay: float) -> TrainedRNN:
    """Majority_0_3 as a linear-3 net on one-hot inputs whose state is P [n_0 - n_3, n_1 - n_3, n_2 - n_3]
    (each step scaled by `decay`), under an untrained MLP readout: the state is planted, the readout wrong."""
    task = get_task("Majority_0_3")
    spec = RNNSpec("linear", 3, "mlp", "onehot", "mse", 0, False)
    torch.manual_seed(0)
    model = MipsRNN(4, 1, spec, x_scale=np.ones(4), y_scale=3.0)
    counts = torch.tensor([[1, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1]], dtype=torch.float64)  # [d, symbols]
    basis = torch.tensor([[0.7, -0.2, 0.1], [0.3, 0.9, 0.0], [-0.4, 0.1, 1.3]], dtype=torch.float64)  # P
    with torch.no_grad():
        model.W.copy_(decay * torch.eye(3, dtype=torch.float64))
        model.U.copy_(basis @ counts)
    x, y = task.generate(256, seed=5)
    trained = TrainedRNN(task, spec, model, None, 0.0, 0, 0.0)
    trained.accuracy = float((predict(trained, x) == y).all(axis=(1, 2)).mean())
    return trained


def test_exact_state_under_a_wrong_readout_gives_a_program_that_verifies():
    trained = _counter_net(1.0)
    assert trained.accuracy < 0.5  # the readout is untrained: the net itself is far from exact
    lattice = lattice_candidates(trained, state_only=True)[0]
    assert lattice.rank == 3
    x, y = trained.task.generate(500, seed=11)
    assert np.array_equal(lattice.y, y)  # the readout is fitted to the task's outputs, not the net's
    program = program_from_lattice(lattice, trained.task)
    assert "tree" in program.method
    assert verify_program(program.source, trained.task).passed


def test_a_state_off_the_integer_lattice_is_refused():
    with pytest.raises(LatticeError, match="lattice"):
        lattice_candidates(_counter_net(0.9), state_only=True)


def test_one_hot_counters_of_three_come_before_the_nonlinear_nets_once():
    specs = list(candidate_specs("Majority_0_3", (0,)))
    counters = RNNSpec("linear", 3, "mlp", "onehot", "mse", 0, False)
    assert specs.index(counters) < [s.family for s in specs].index("gru")
    assert len(specs) == len(set(specs))  # each architecture is trained at most once per seed


def test_a_counter_with_its_running_minimum_reads_balanced_brackets():
    # Balanced_Parenthesis over a planted depth counter: not a function of the depth alone, but of
    # the depth and its running minimum (the second program `extraction_candidates` offers)
    task = get_task("Balanced_Parenthesis")
    x, y = task.generate(300, seed=11)  # [n, 10, 1]
    depth = np.cumsum(np.where(x == 0, 1, -1), 1)  # [n, 10, 1]
    lattice = Lattice(np.zeros((1, 1)), depth, x, y, 0.0, "krylov", np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="contradictory"):
        program_from_lattice(lattice, task)
    program = program_from_lattice(lattice, task, extrema=True)
    assert "extrema" in program.method and "lo0" in program.source
    assert verify_program(program.source, task).passed
