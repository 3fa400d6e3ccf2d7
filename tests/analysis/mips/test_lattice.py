"""Integer lattices of linear RNNs: hidden bases, junk modes, readout biases; exact reparametrisations."""

import numpy as np
import pytest
import torch

from workbench.analysis.mips import extract_program
from workbench.analysis.mips.lattice import LatticeError, integer_lattice, lattice_candidates, markov_lattice
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec
from workbench.analysis.mips.simplify import (
    diagonalize,
    is_exact,
    real_jordan_basis,
    reparametrize,
    snap_all,
    whiten,
)
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import TrainedRNN, predict
from workbench.analysis.mips.verify import verify_program


def _linear_net(task_name: str, w, u, b, v, c, bias: bool = True) -> TrainedRNN:
    task = get_task(task_name)
    spec = RNNSpec("linear", len(w), bias=bias)
    model = MipsRNN(len(u[0]), len(v), spec)
    with torch.no_grad():
        for param, value in ((model.W, w), (model.U, u), (model.b, b)):
            param.copy_(torch.tensor(value, dtype=torch.float64))
        model.readout.weight.copy_(torch.tensor(v, dtype=torch.float64))
        model.readout.bias.copy_(torch.tensor(c, dtype=torch.float64))
    return TrainedRNN(task, spec, model, None, 1.0, 0, 0.0)


def _gravity_with_junk() -> TrainedRNN:
    """(v, p) of Newton_Gravity plus a decaying mode the readout never sees, in a random basis, readout bias 0.3."""
    w = [[1, 0, 0], [1, 1, 0], [0, 0, 0.37]]
    u = [[1], [1], [0.7]]
    b = [-1, -1, 0.2]
    trained = _linear_net("Newton_Gravity", w, u, b, [[0, 1, 0]], [0.3])
    p = np.random.default_rng(0).normal(size=(3, 3))
    reparametrize(trained, p)
    return trained


def test_lattice_drops_an_unobservable_mode_and_a_readout_bias_and_finds_newton_gravity():
    trained = _gravity_with_junk()
    assert is_exact(trained)
    lattice = lattice_candidates(trained)[0]
    assert lattice.rank == 2 and lattice.max_error < 0.35  # the readout bias 0.3 is read as an offset
    _, program = extract_program(trained)
    assert verify_program(program.source, "Newton_Gravity").passed


def test_a_non_integer_recurrence_has_no_lattice():
    # h' = 0.5 h + x: the states 0.5**k x are on no lattice of spacing 1/k (k <= 12) once long enough
    trained = _linear_net("Sum_All", [[0.5]], [[1.0]], [0.0], [[1.0]], [0.0], bias=False)
    with pytest.raises(LatticeError, match="no integer lattice"):
        integer_lattice(trained)


def test_reparametrisations_keep_every_output():
    trained = _gravity_with_junk()
    x, _ = trained.task.generate(64, seed=1)
    h_before = trained.model(trained.features(x)).detach()
    p = whiten(trained)
    assert p.shape == (3, 3)
    h = trained.model.hidden_states(trained.features(trained.task.generate(512, seed=5)[0])).numpy().reshape(-1, 3)
    assert np.allclose(np.cov(h, rowvar=False), np.eye(3), atol=1e-6)
    assert diagonalize(trained)  # defective W (the double eigenvalue 1 of Newton): real Schur form
    assert torch.allclose(trained.model(trained.features(x)).detach(), h_before, atol=1e-6)
    assert (predict(trained, x) == trained.task.generate(64, seed=1)[1]).all()


def test_real_jordan_basis_gives_rotation_blocks_and_snapping_recovers_integers():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.5]])  # eigenvalues +-i and 0.5
    q = np.random.default_rng(1).normal(size=(3, 3))
    w = q @ rot @ np.linalg.inv(q)
    p = real_jordan_basis(w)
    d = np.linalg.inv(p) @ w @ p
    assert np.allclose(d[2, :2], 0, atol=1e-9) and np.allclose(d[:2, 2], 0, atol=1e-9)
    assert np.allclose(np.sort(np.linalg.eigvals(d[:2, :2]).imag), [-1, 1])
    # integer snapping: a counter with a slightly-off weight snaps back to 1 and stays exact
    trained = _linear_net("Sum_All", [[1.0 + 1e-9]], [[1.0 - 1e-4]], [0.0], [[1.0]], [0.0], bias=False)
    assert is_exact(trained)
    assert snap_all(trained) >= 1 and trained.model.W.item() == 1.0 and trained.model.U.item() == 1.0
    assert is_exact(trained)


def test_reparametrize_rejects_a_singular_basis_and_nonlinear_nets():
    trained = _gravity_with_junk()
    with pytest.raises(ValueError, match="singular"):
        reparametrize(trained, np.zeros((3, 3)))
    gru = TrainedRNN(get_task("Parity_All"), RNNSpec("gru", 2), MipsRNN(1, 1, RNNSpec("gru", 2)), None, 1.0, 0, 0.0)
    with pytest.raises(ValueError, match="linear recurrence"):
        reparametrize(gru, np.eye(2))


def _sum_last4_shift_register(gain: float) -> TrainedRNN:
    """Sum_Last4 as a shift register h = (x_t, x_{t-1}, x_{t-2}, x_{t-3}) read by gain * (1, 1, 1, 1)."""
    w = np.eye(4, k=-1)  # h_j <- h_{j-1}
    return _linear_net("Sum_Last4", w, [[1.0], [0], [0], [0]], [0] * 4, [[gain] * 4], [0.0], bias=False)


def test_markov_realisation_accepts_a_net_at_the_rounding_edge_only():
    # Markov parameters 1.0015: exact on typical sums, but a sum near 396 comes out ~0.6 high and
    # rounds up; the integer realisation (parameters 1) is kept there, and its outputs are the task's
    edge_net = _sum_last4_shift_register(1 + 0.6 / 396)
    lattice = markov_lattice(edge_net)
    assert not np.array_equal(lattice.y, predict(edge_net, lattice.x))  # the net rounds some sums up
    task = get_task("Sum_Last4")
    assert all(list(lattice.y[i, :, 0]) == task(list(lattice.x[i, :, 0])) for i in range(len(lattice.x)))
    assert lattice.rank == 4
    _, program = extract_program(edge_net)  # the Markov reading comes first and gives the task's program
    assert verify_program(program.source, "Sum_Last4").passed
    # a net further off (up to 1.2 from the realisation) is not rounding noise
    with pytest.raises(LatticeError, match="disagrees with the net"):
        markov_lattice(_sum_last4_shift_register(1 + 1.2 / 396))
