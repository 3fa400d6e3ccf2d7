"""MIPS run artefacts (weights, states, program, verification), shard merging, the LSTM cell and the search order."""

import json

import numpy as np
import pytest
import torch

from workbench.analysis.mips import SolveResult, merge_results, update_results
from workbench.analysis.mips.artifacts import load_network, save_artifacts
from workbench.analysis.mips.benchmark import main
from workbench.analysis.mips.fsm import fsm_from_labels, minimize, planted_fsm_run
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec
from workbench.analysis.mips.synthesis import program_from_fsm
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import TrainedRNN, candidate_specs
from workbench.analysis.mips.verify import verify_program


def _parity_result() -> SolveResult:
    delta, out = np.array([[0, 1], [1, 0]]), [(0,), (1,)]
    sym = np.random.default_rng(0).integers(0, 2, size=(50, 8))
    labels = planted_fsm_run(delta, out, 0, sym)
    fsm = minimize(fsm_from_labels(labels, 0, sym, np.array(out)[labels], [0, 1], method="planted"))
    task = get_task("Parity_All")
    program = program_from_fsm(fsm, task)
    spec = RNNSpec("gru", 3, "linear", "onehot", "ce", 0)
    trained = TrainedRNN(task, spec, MipsRNN(2, 2, spec), np.array([0, 1]), 1.0, 10, 0.1)
    result = SolveResult(task.name, solved=True, rnn=spec.label(), n_states=fsm.n_states, method=program.method)
    result.program, result.verification = program, verify_program(program.source, task)
    result.trained, result.extraction = trained, fsm
    return result


def test_artefacts_hold_weights_states_program_and_verification(tmp_path):
    result = _parity_result()
    paths = save_artifacts(result, tmp_path)
    assert {p.name for p in paths} == {
        "Parity_All.py", "Parity_All.safetensors", "Parity_All.states.json", "Parity_All.verification.json"
    }
    model, spec, classes = load_network(tmp_path / "Parity_All.safetensors")
    assert spec == result.trained.spec and list(classes) == [0, 1]
    x = torch.rand(2, 5, 2, dtype=torch.float64)
    assert torch.equal(model(x), result.trained.model(x))
    states = json.loads((tmp_path / "Parity_All.states.json").read_text())
    assert states["type"] == "fsm" and states["n_states"] == 2 and states["delta"] == [[0, 1], [1, 0]]
    record = json.loads((tmp_path / "Parity_All.verification.json").read_text())
    assert record["verification"]["passed"] and record["verification"]["n_random"] == 11_000
    assert verify_program((tmp_path / "Parity_All.py").read_text(), "Parity_All").passed


def _shard(path, budget, rows):
    path.write_text(json.dumps({"budget": budget, "rows": rows}))
    return path


def _row(task, solved):
    return {"task": task, "solved": solved, "rnn": "", "states": None, "method": "", "program_lines": None,
            "verification": "x", "attempts": 1, "exact_nets": 0,
            "seconds": {"train": 1.0, "simplify": 0.0, "extract": 0.0, "verify": 0.0}}


def test_merge_orders_tasks_and_refuses_mixed_budgets(tmp_path, capsys):
    a = _shard(tmp_path / "a.json", 90, [_row("Prev1", True), _row("Bitwise_Xor", False)])
    _shard(tmp_path / "b.json", 90, [_row("Binary_Addition", True), _row("Bitwise_Xor", True)])
    report = tmp_path / "report.md"
    main(["--merge", str(a), str(tmp_path / "b.md"), "--report", str(report)])  # a .md path finds its .json
    text = report.read_text()
    assert "Solved **3 / 3**" in text and "Per-task training-search budget: 90 work-seconds" in text
    assert text.index("Binary_Addition") < text.index("Bitwise_Xor") < text.index("Prev1")
    assert "solved 3 / 3" in capsys.readouterr().out
    c = _shard(tmp_path / "c.json", 30, [_row("Prev2", False)])
    with pytest.raises(ValueError, match="different budgets"):
        merge_results([a, c])
    with pytest.raises(FileNotFoundError):
        merge_results([tmp_path / "missing.json"])


def test_update_replaces_rerun_rows_marks_them_and_keeps_the_budget_check(tmp_path, capsys):
    base = _shard(tmp_path / "results.json", 80, [_row("Binary_Addition", True), _row("Sum_Last4", False),
                                                  _row("Prev1", True)])
    rerun = _shard(tmp_path / "rerun.json", 80, [_row("Sum_Last4", True)])
    main(["--update", str(base), "--with", str(rerun), "--note", "2 shared cores"])
    text = (tmp_path / "results.md").read_text()
    assert "Solved **3 / 3**" in text and "| Sum_Last4* | yes |" in text and "| Prev1 | yes |" in text
    assert "re-run after the full run, same budget (2 shared cores), marked `*` below: Sum_Last4" in text
    data = json.loads(base.read_text())
    assert data["rerun"] == ["Sum_Last4"] and data["budget"] == 80 and len(data["rows"]) == 3
    assert "updated: solved 3 / 3" in capsys.readouterr().out
    # a second update keeps the first re-run's mark; a rerun that solves nothing still replaces the row
    update_results(base, [_shard(tmp_path / "r2.json", 80, [_row("Prev1", False)])])
    data = json.loads(base.read_text())
    assert data["rerun"] == ["Sum_Last4", "Prev1"] and sum(r["solved"] for r in data["rows"]) == 2
    with pytest.raises(ValueError, match="budget"):
        update_results(base, [_shard(tmp_path / "r3.json", 95, [_row("Prev2", True)])])


def test_lstm_state_is_h_and_c_and_edits_act_only_forward():
    spec = RNNSpec("lstm", 3, "linear", "onehot", "ce", 0)
    model = MipsRNN(2, 2, spec)
    x = torch.rand(4, 6, 2, dtype=torch.float64)
    states = model.hidden_states(x)
    assert model.state_size == 6 and states.shape == (4, 6, 6)
    assert torch.allclose(model(x), model.read(states))

    def zero_at_2(value, hook):
        value[:, 2] = 0.0
        return value

    edited = model.run_with_hooks(x, fwd_hooks=[("hook_h", zero_at_2)])
    base = model(x)
    assert torch.equal(edited[:, :2], base[:, :2]) and not torch.allclose(edited[:, 3:], base[:, 3:])


def test_search_order_is_linear_first_and_covers_gru_lstm_elman():
    specs = list(candidate_specs("Add_Mod_5", (0,)))
    families = [s.family for s in specs]
    assert families[0] == "linear" and {"gru", "lstm", "tanh"} <= set(families)
    first_nonlinear = families.index("gru")
    assert all(s.d_hidden <= 3 for s in specs[:first_nonlinear])
    # many symbols: the larger (cheap) linear nets come before any nonlinear one
    big = [s for s in candidate_specs("Prev5", (0,))]
    assert max(s.d_hidden for s in big[: [s.family for s in big].index("gru")]) == 8
