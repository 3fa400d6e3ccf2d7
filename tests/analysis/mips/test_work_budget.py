"""MIPS budgets count work, not a clock: the same seeded search stops at the same step on any machine."""

import time

import pytest
import torch

from workbench.analysis.mips import pipeline, solve_task, training
from workbench.analysis.mips.rnn import RNNSpec
from workbench.analysis.mips.training import train_rnn
from workbench.analysis.mips.work import COSTS, pass_cost

GRU = RNNSpec("gru", 16, "linear", "onehot", "ce", 0)


def slow_clock(monkeypatch: pytest.MonkeyPatch, factor: float = 50.0) -> None:
    """Make every CPU-second reading run `factor` times fast: a machine that much slower or busier."""
    start = time.process_time()
    fake = lambda: start + factor * (time.process_time() - start)  # noqa: E731
    monkeypatch.setattr(training, "cpu_seconds", fake)
    monkeypatch.setattr(pipeline, "cpu_seconds", fake)


def test_a_slower_clock_stops_training_at_the_same_step(monkeypatch):
    # Add_Mod_5 is not exact within 1.5 work-seconds: the work limit is what ends both runs
    fast = train_rnn("Add_Mod_5", GRU, work_limit=1.5)
    slow_clock(monkeypatch)
    slow = train_rnn("Add_Mod_5", GRU, work_limit=1.5)
    assert fast.stopped_by_budget and slow.stopped_by_budget
    assert slow.seconds > 10 * fast.seconds  # the fake clock did run fast
    assert fast.steps == slow.steps and fast.work == slow.work and fast.accuracy == slow.accuracy
    for name, value in fast.model.state_dict().items():
        assert torch.equal(value, slow.model.state_dict()[name]), name


def test_the_work_charged_is_the_cost_model_over_the_passes_made():
    trained = train_rnn("Add_Mod_5", GRU, work_limit=0.5)
    d_in, d_out = trained.model.d_input, trained.model.d_output
    expected = COSTS.call + sum(
        count * pass_cost(GRU, d_in, d_out, trained.task.seq_len, batch, backward)
        for (backward, batch), count in trained.passes.items()
    )
    assert trained.work == pytest.approx(expected, rel=1e-12)
    # 100 training steps per check, plus an accuracy pass over the held-out set at each check
    assert trained.passes[(True, 256)] == trained.steps and trained.passes[(False, 2048)] == trained.steps // 100
    assert trained.work > 0.5  # the limit is checked every 100 steps, so the run ends just past it


@pytest.mark.slow
def test_a_search_cut_short_by_its_budget_is_the_same_on_a_slower_machine(monkeypatch):
    fast = solve_task("Add_Mod_5", budget=4.0)
    slow_clock(monkeypatch)
    slow = solve_task("Add_Mod_5", budget=4.0)
    assert not fast.solved and fast.note == "no exact network within 4 work-s"
    assert fast.attempts == slow.attempts >= 2 and fast.work == slow.work
    assert {k: v for k, v in fast.row().items() if k != "seconds"} == {
        k: v for k, v in slow.row().items() if k != "seconds"
    }


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "80"])
def test_a_bad_work_limit_or_budget_is_named_before_any_training(bad):
    with pytest.raises(ValueError, match="work_limit must be a positive number of work-seconds"):
        train_rnn("Add_Mod_5", GRU, work_limit=bad)
    with pytest.raises(ValueError, match="budget must be a positive number of work-seconds"):
        solve_task("Add_Mod_5", budget=bad)
