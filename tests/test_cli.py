"""The `workbench` command: train end to end on a tiny config, then list and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.cli import SUBCOMMANDS, build_parser, main
from workbench.training import load_checkpoint
from workbench.training.train import torch_threads

TINY = [
    "--max-bytes", "30000", "--layers", "1", "--d-model", "16", "--hidden", "16",
    "--batch-size", "4", "--seq-len", "32", "--min-count", "1", "--eval-chars", "2000",
    "--no-progress", "--threads", "1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and other processes on the cores cannot stall it."""
    with torch_threads(1):
        yield


def test_train_then_eval_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--family", "gru", "--steps", "6", "--seed", "2", "--out", str(out), *TINY]) == 0
    assert f"checkpoint: {out}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["family"] == "gru" and config["provenance"]["seed"] == 2
    command = config["provenance"]["command"]
    assert command.startswith("workbench train --corpus python-stdlib --family gru --layers 1")
    assert "--steps 6" in command and "--seed 2" in command
    model = load_checkpoint(out)
    assert model.cfg.family == "gru" and model.tokenizer is not None

    assert main(["eval", str(out), "--max-chars", "500", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("test bpc: ") and "500 characters of python-stdlib" in printed


def test_reproduce_command_reproduces_the_weights(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["train", "--steps", "3", "--out", str(first), *TINY]) == 0
    command = json.loads((first / "config.json").read_text())["provenance"]["command"].split()
    assert command[:2] == ["workbench", "train"]
    at = command.index("--out")
    second = tmp_path / "second"
    assert main([*command[1:at], *command[at + 2 :], "--out", str(second), "--no-progress"]) == 0
    weights = [load_file(path / "model.safetensors") for path in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_resume_and_refusal_to_overwrite(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    assert main(["train", "--steps", "4", "--stop-at", "2", "--out", out, *TINY]) == 0
    assert main(["train", "--steps", "4", "--out", out, *TINY]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--steps", "4", "--resume", "--out", out, *TINY]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["provenance"]["steps"] == 4


def test_list_and_unknown_model(capsys) -> None:
    assert main(["list"]) == 0
    assert main(["list", "--json"]) == 0
    capsys.readouterr()
    assert main(["eval", "no-such-model"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_subcommands_are_registered_one_function_each() -> None:
    names = [fn.__name__ for fn in SUBCOMMANDS]
    assert names[:3] == ["add_train_command", "add_list_command", "add_eval_command"]
    assert {"add_tour_command", "add_report_command"} <= set(names)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--no-such-flag"])
