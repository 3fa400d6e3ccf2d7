"""MIPS synthesis: if-else trees for unbounded integer states (Majority_0_2), expression search, search order."""

import numpy as np

from workbench.analysis.mips.decision import decision_tree
from workbench.analysis.mips.lattice import Lattice
from workbench.analysis.mips.synthesis import program_from_lattice, search_expression
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import candidate_specs
from workbench.analysis.mips.verify import verify_program


def _majority_counters(n: int = 300, seed: int = 11) -> Lattice:
    """Majority_0_2's two counters z0 = n0 - n2, z1 = n1 - n2 (what a linear net's lattice reads), length 10."""
    task = get_task("Majority_0_2")
    x, y = task.generate(n, seed=seed)  # [n, 10, 1]
    counts = [np.cumsum(x[..., 0] == v, 1) for v in (0, 1, 2)]  # each [n, 10]
    z = np.stack([counts[0] - counts[2], counts[1] - counts[2]], -1)  # [n, 10, 2]
    return Lattice(np.zeros((2, 2)), z, x, y, 0.0, "krylov", np.zeros(2, np.int64))


def test_majority_output_is_a_tree_that_holds_beyond_the_states_seen():
    lattice = _majority_counters()
    expr = decision_tree({"z0": lattice.z[..., 0].ravel(), "z1": lattice.z[..., 1].ravel()}, lattice.y.ravel())
    assert expr is not None and " if " in expr
    f = eval(f"lambda z0, z1: {expr}")  # noqa: S307 - our own expression
    # states far outside the data (|z| <= 10 there): the comparisons still give the majority
    for z0 in range(-60, 61, 7):
        for z1 in range(-60, 61, 5):
            expected = 0 if z0 >= 0 and z0 >= z1 else (1 if z1 >= 0 else 2)
            assert f(z0, z1) == expected, (z0, z1)


def test_lattice_program_uses_no_partial_table_and_verifies_on_long_sequences():
    program = program_from_lattice(_majority_counters(), get_task("Majority_0_2"))
    assert "tree" in program.method and "OUT0 = {" not in program.source  # no table keyed on seen states
    assert verify_program(program.source, "Majority_0_2").passed  # includes 1,000 sequences of length 100


def test_arg_max_of_four_counts_is_a_depth_three_tree_that_verifies():
    # Majority_0_3 over planted counters z_i = n_i - n_3: a three-round tournament, beyond depth 2
    task = get_task("Majority_0_3")
    x, y = task.generate(300, seed=11)  # [n, 10, 1]
    counts = [np.cumsum(x[..., 0] == v, 1) for v in range(4)]  # each [n, 10]
    z = np.stack([counts[v] - counts[3] for v in range(3)], -1)  # [n, 10, 3]
    columns = {f"z{i}": z[..., i].ravel() for i in range(3)}
    assert decision_tree(columns, y.ravel(), max_depth=2) is None
    program = program_from_lattice(Lattice(np.zeros((3, 3)), z, x, y, 0.0, "krylov", np.zeros(3, np.int64)), task)
    assert "tree" in program.method and "OUT0 = {" not in program.source
    assert verify_program(program.source, task).passed


def test_no_tree_when_one_expression_or_none_fits():
    z = np.arange(-5, 6)
    assert decision_tree({"z0": z}, z + 0) is None  # a single leaf: left to the plain regressions
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 50, size=200)
    assert decision_tree({"z0": rng.integers(0, 3, 200)}, noise) is None  # not a function of small trees


def test_many_symbols_put_larger_linear_nets_before_any_mlp_readout():
    # Sum_Last7 (100 symbols) needs linear-7: it comes before the slow MLP readouts
    specs = list(candidate_specs("Sum_Last7", (0,)))
    first_mlp = next(i for i, s in enumerate(specs) if s.readout == "mlp")
    window = next(i for i, s in enumerate(specs) if s.family == "linear" and s.d_hidden == 7)
    assert window < first_mlp


def test_search_builds_balanced_splits_before_the_per_size_cap_fills():
    # Diff_Abs_Values reads abs(x_t) - abs(x_{t-1}) off the states (x_t, x_{t-1}): a (2, 2) split of size 5,
    # which the (1, 3) splits used to crowd out of the 4000 expressions kept per size
    rng = np.random.default_rng(0)
    z0, z1 = rng.integers(-100, 100, 3000), rng.integers(-100, 100, 3000)
    found = search_expression({"z0": z0, "z1": z1}, np.abs(z0) - np.abs(z1), (0, 1, 2, 200, 99))
    assert found == "(abs(z0) - abs(z1))"
