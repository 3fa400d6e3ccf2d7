"""The full MIPS pipeline (train -> simplify -> extract -> synthesise -> verify) on quick tasks, fixed seeds."""

import pytest

from workbench.analysis.mips import extract_program, results_table, solve_task
from workbench.analysis.mips.rnn import RNNSpec
from workbench.analysis.mips.simplify import is_exact, snap_weights, sparsify
from workbench.analysis.mips.training import train_rnn
from workbench.analysis.mips.verify import verify_program

SAFETY_NET_S = 600.0  # work limits far above what the step counts need: they only bound a runaway


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "spec", "expect"),
    [
        ("Parity_All", RNNSpec("gru", 4, "linear", "onehot", "ce", 0), "^"),
        ("Bitwise_Xor", RNNSpec("gru", 4, "linear", "onehot", "ce", 0), "x0 ^ x1"),
        ("Sum_Last2", RNNSpec("linear", 2, "mlp", "scalar", "mse", 0, False), "z0 + z1"),
    ],
)
def test_pipeline_solves_a_quick_task_end_to_end(task, spec, expect):
    # The outcome is set by the step count and the seeds; the work limit is only a safety net.
    trained = train_rnn(task, spec, work_limit=SAFETY_NET_S)
    assert not trained.stopped_by_budget, f"the work limit, not exactness, ended it at step {trained.steps}"
    assert trained.exact
    if spec.family == "linear":
        sparsify(trained, steps=50)
        snap_weights(trained)
        assert is_exact(trained)
    _, program = extract_program(trained)
    assert expect in program.source
    assert verify_program(program.source, task).passed


@pytest.mark.slow
def test_solve_task_searches_and_reports_a_verified_program():
    result = solve_task("Evens_Counter", budget=SAFETY_NET_S)  # its first candidate solves it
    assert result.solved and result.rnn.startswith("linear-1") and result.n_states == 1
    assert "(x % 2)" in result.program.source
    table = results_table([result.row()], SAFETY_NET_S)
    assert "Solved **1 / 1**" in table and "| Evens_Counter | yes |" in table


def test_unknown_task_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown MIPS task"):
        solve_task("No_Such_Task")
