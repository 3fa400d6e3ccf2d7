"""Your own MIPS task: defined with a range alphabet, checked, solved through `mips.solve` and the command line.

The task (three times each input, over 1..5) is solved by the search's first network in a few seconds;
the budget is only a safety net.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.analysis import mips
from workbench.analysis.mips.benchmark import main
from workbench.analysis.mips.suite import results_table
from workbench.analysis.mips.tasks import TASKS, TaskDefinitionError, register_task

SAFETY_NET_S = 600.0
TASK_FILE = '''
from workbench.analysis.mips import Task

def triple(xs):
    return [3 * x for x in xs]

TRIPLE = Task("Triple_Custom", triple, range(1, 6), description="three times the input")
'''


def triple(xs: list) -> list:
    return [3 * x for x in xs]


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> mips.SolveResult:
    task = mips.Task("Triple_Custom", triple, range(1, 6), output_alphabet=range(3, 16))
    return mips.solve(task, budget=SAFETY_NET_S, artifacts=tmp_path_factory.mktemp("artefacts"))


def test_a_custom_task_with_a_range_alphabet_solves_through_the_public_api(solved):
    assert solved.solved and solved.custom and solved.lattice is not None and solved.fsm is None
    assert solved.verification.passed and solved.verification.n_random == 11_000
    assert "3*x" in solved.program.source.replace(" ", "")
    assert {p.suffix for p in solved.artifacts} == {".py", ".safetensors", ".json"}
    assert all(p.exists() for p in solved.artifacts)
    assert solved.seconds["synthesize"] > 0.0  # measured, no longer folded into "extract"


def test_the_results_table_labels_custom_tasks_without_the_papers_columns(solved):
    table = results_table([solved.row()], SAFETY_NET_S)
    assert table.startswith("# MIPS results (custom tasks)") and "Solved **1 / 1**" in table
    assert "paper MIPS" not in table and "GPT-4" not in table and "Michaud et al. 2024 tasks" not in table
    mixed = results_table([{**solved.row(), "task": "Bitwise_Not", "custom": False}, solved.row()], 80)
    assert "| 10 | Bitwise_Not |" in mixed and "## Custom tasks" in mixed and "| Triple_Custom | yes |" in mixed


def test_the_command_line_solves_the_tasks_of_a_task_file(tmp_path: Path, capsys):
    path = tmp_path / "my_tasks.py"
    path.write_text(TASK_FILE)
    out = tmp_path / "results.md"
    main(["--task-file", str(path), "--budget", str(SAFETY_NET_S), "--out", str(out),
          "--programs", str(tmp_path / "programs")])
    assert "solved 1 / 1" in capsys.readouterr().out
    assert "# MIPS results (custom tasks)" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["custom"] is True
    assert (tmp_path / "programs" / "Triple_Custom.py").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task-file", "no_such_file.py"], "no such file"),
        (["--task", "no_colon"], "module:object"),
        (["--task", "json:dumps"], "must be a Task"),
    ],
)
def test_the_command_line_rejects_bad_task_references_clearly(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_task_file_with_a_faulty_reference_stops_before_any_search(tmp_path: Path, capsys):
    path = tmp_path / "bad_tasks.py"
    path.write_text(TASK_FILE.replace("return [3 * x for x in xs]", "return [3 * x for x in xs][:-1]"))
    with pytest.raises(SystemExit):
        main(["--task-file", str(path)])
    assert "one output per input step" in capsys.readouterr().err


def running_count(xs: list) -> list:
    return [t + 1 for t in range(len(xs))]


def _one_short(xs):
    return running_count(xs)[:-1]


_calls = iter(range(10**9))


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"),
    [
        (_one_short, {}, "returned 0 outputs for the 1-step input"),
        (lambda xs: 7, {}, "must return a list with one output per input step"),
        (lambda xs: "ab"[: len(xs)], {}, "must return a list"),
        (lambda xs: [x / 2 for x in xs], {}, "outputs must be integers, got a float"),
        (lambda xs: [str(x) for x in xs], {}, "outputs must be integers, got a str"),
        (lambda xs: [(x, x) for x in xs], {}, "pass n_outputs=2"),
        (lambda xs: [x for x in xs], {"n_outputs": 2}, "each output is a tuple of that many"),
        (lambda xs: [next(_calls) for _ in xs], {}, "not deterministic"),
        (lambda xs: [len(xs)] * len(xs), {}, "not causal"),
        (lambda xs: [1 // (x - 3) for x in xs], {}, "raised ZeroDivisionError"),
        (lambda xs: [xs.pop() for _ in range(len(xs))][::-1], {}, "changed its input"),
        (running_count, {"output_alphabet": range(5)}, "outside output_alphabet 0..4"),
    ],
    ids=["one too few", "an int", "a string", "floats", "strings", "tuples", "ints for 2 outputs",
         "random", "looks ahead", "raises", "mutates its input", "outside the output alphabet"],
)
def test_each_faulty_reference_function_gets_a_clear_error(fn, kwargs, message):
    task = mips.Task("Faulty", fn, range(10), **kwargs)
    with pytest.raises(TaskDefinitionError, match=message.replace("(", r"\(")) as info:
        mips.solve(task, budget=1)
    assert "task 'Faulty'" in str(info.value)


def test_register_task_checks_the_reference_before_the_task_joins_the_registry():
    with pytest.raises(TaskDefinitionError, match="one output per input step"):
        register_task("Faulty_Registered", _one_short, range(4))
    assert "Faulty_Registered" not in TASKS
    task = register_task(mips.Task("Triple_Registered", triple, range(1, 6)))
    try:
        assert mips.get_task("Triple_Registered") is task and "Triple_Registered" in mips.list_tasks()
    finally:
        TASKS.pop("Triple_Registered")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alphabet": []}, "alphabet is empty"),
        ({"alphabet": "0123"}, "must be a range or a list of integers"),
        ({"alphabet": [0, 1.5]}, "must hold integers, got 1.5"),
        ({"alphabet": range(3), "n_inputs": 0}, "n_inputs must be an integer >= 1"),
        ({"alphabet": range(3), "name": "has space"}, "a task's name must start with a letter"),
        ({"alphabet": range(3), "fn": 3}, "fn must be callable"),
    ],
)
def test_bad_task_arguments_are_named_in_the_error(kwargs, message):
    arguments = {"name": "Bad", "fn": running_count, **kwargs}
    with pytest.raises(TaskDefinitionError, match=message):
        mips.Task(**arguments)


def test_a_tuple_alphabet_names_its_symbols_and_the_error_says_how_to_give_a_range():
    pair = mips.Task("Pair", running_count, (0, 9))
    assert pair.alphabet == (0, 9) and mips.Task("Digits", running_count, range(10)).alphabet == tuple(range(10))
    with pytest.raises(ValueError, match=r"outside the alphabet \{0, 9\} \(2 symbols: .* give range\(0, 10\)\)"):
        pair([5, 3])


def test_a_bad_budget_is_named():
    with pytest.raises(ValueError, match="budget must be a positive number of work-seconds"):
        mips.solve(mips.Task("Triple_Custom", triple, range(1, 6)), budget=0)


def test_the_default_budget_is_the_one_the_published_results_used():
    published = json.loads((Path(__file__).resolve().parents[3] / "benchmarks" / "mips_results.json").read_text())
    assert mips.DEFAULT_BUDGET == published["budget"] == 80.0
