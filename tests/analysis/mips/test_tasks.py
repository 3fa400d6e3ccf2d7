"""MIPS task suite: 62 tasks, generators equal their references, alphabets respected, clear errors."""

import numpy as np
import pytest

from workbench.analysis.mips.tasks import TASKS, UnknownTaskError, get_task, list_tasks, register_task


def test_the_suite_has_the_papers_62_tasks_and_counts():
    assert len(list_tasks()) >= 62
    paper = [TASKS[n] for n in list_tasks() if TASKS[n].number]
    assert len(paper) == 62 and [t.number for t in paper] == list(range(1, 63))
    assert sum(t.paper_mips for t in paper) == 32 and sum(t.paper_gpt4 for t in paper) == 30


@pytest.mark.parametrize("name", [n for n in TASKS if TASKS[n].number])
def test_generator_equals_reference_and_respects_alphabet(name):
    task = get_task(name)
    x, y = task.generate(20, seed=1)
    assert x.shape == (20, task.seq_len, task.n_inputs) and y.shape == (20, task.seq_len, task.n_outputs)
    assert np.isin(x, task.alphabet).all()
    for seq, out in zip(x, y, strict=True):
        xs = [int(v[0]) for v in seq] if task.n_inputs == 1 else [tuple(map(int, v)) for v in seq]
        ref = task(xs)
        assert [list(o) if isinstance(o, tuple) else [o] for o in ref] == out.tolist()


def test_known_values_of_some_references():
    assert get_task("Binary_Addition")([(1, 1), (1, 0), (0, 0)]) == [0, 0, 1]
    assert get_task("Sum_Last3")([1, 2, 3, 4]) == [1, 3, 6, 9]
    assert get_task("Majority_0_2")([2, 1, 1, 2]) == [2, 1, 1, 1]
    assert get_task("Div_3")([1, 1, 0]) == [0, 1, 0]  # 1 -> 0 r1; 11 -> 1 r0; 110 -> 0
    assert get_task("Balanced_Parenthesis")([0, 1, 1, 0]) == [0, 1, 0, 0]
    assert get_task("Dithering")([10, 10, 10]) == [0, 1, 1]


def test_unknown_task_name_suggests_close_names():
    with pytest.raises(UnknownTaskError, match="Parity_All"):
        get_task("Parity_Al")


def test_empty_and_out_of_alphabet_inputs_are_rejected_clearly():
    task = get_task("Parity_All")
    with pytest.raises(ValueError, match="empty"):
        task([])
    with pytest.raises(ValueError, match="outside the alphabet"):
        task([0, 1, 2])
    with pytest.raises(ValueError, match="channels"):
        get_task("Bitwise_Xor")([1, 0])


def test_user_defined_task_joins_the_registry():
    task = register_task("Test_Double", lambda xs: [2 * x for x in xs], range(5), overwrite=True)
    try:
        assert get_task("Test_Double")([1, 4]) == [2, 8] and task.alphabet == (0, 1, 2, 3, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_task("Test_Double", lambda xs: xs, range(2))
    finally:
        TASKS.pop("Test_Double")
