"""The near-exact route to modular counters: a GRU short of exact still holds the k-state machine."""

from __future__ import annotations

import pytest

from workbench.analysis.mips.families import add_mod, add_mod_family
from workbench.analysis.mips.pipeline import NEAR_EXACT, extraction_candidates
from workbench.analysis.mips.rnn import RNNSpec
from workbench.analysis.mips.tasks import TASKS
from workbench.analysis.mips.training import train_rnn
from workbench.analysis.mips.verify import verify_program


def test_family_members_are_the_suite_tasks_where_the_suite_has_them() -> None:
    family = add_mod_family()
    assert [t.name for t in family] == [f"Add_Mod_{k}" for k in range(3, 11)]
    assert family[0] is TASKS["Add_Mod_3"] and family[5] is TASKS["Add_Mod_8"]
    assert "Add_Mod_9" not in TASKS and len(TASKS) >= 62
    ten = add_mod(10)
    assert ten.alphabet == tuple(range(10))
    assert ten([9, 9, 3, 0]) == [9, 8, 1, 1]


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "7"])
def test_add_mod_rejects_a_bad_modulus(bad) -> None:
    with pytest.raises(ValueError, match="k must be an integer modulus"):
        add_mod(bad)


def test_a_near_exact_gru_reads_to_the_verified_counter() -> None:
    # 700 Adam steps leave this GRU-16 just short of exact on held-out sequences of Add_Mod_5
    trained = train_rnn("Add_Mod_5", RNNSpec("gru", 16, "linear", "onehot", "ce", 0), max_steps=700, work_limit=1e9)
    assert NEAR_EXACT <= trained.accuracy < 1.0, f"precondition: a near-exact net, got {trained.accuracy}"
    verified = [
        (reading, program)
        for reading, program in extraction_candidates(trained)
        if verify_program(program.source, trained.task).passed
    ]
    assert verified, "no reading of the near-exact net verified"
    reading, program = verified[0]
    assert reading.n_states == 5
    assert program.source.count("% 5") >= 1 or "table" in program.method
