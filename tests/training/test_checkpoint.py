"""Checkpoints: exact round trips, atomic writes that survive a crash, clear shape errors, no pickle."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench.data.tokenizer import CharTokenizer
from workbench.errors import CheckpointError
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.training import checkpoint as checkpoint_module
from workbench.training.checkpoint import (
    TrainingState,
    flatten_tensors,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    unflatten_tensors,
)
from workbench.training.train import torch_threads

TEXT = "def f(x):\n    return x + 1\n"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and other processes on the cores cannot stall it."""
    with torch_threads(1):
        yield


def _model(family: str = "lstm", seed: int = 0, **overrides) -> tuple[HookedRecurrentLM, CharTokenizer]:
    tokenizer = CharTokenizer.from_text(TEXT)
    torch.manual_seed(seed)
    config = dict(family=family, n_layers=2, d_model=16, d_hidden=12, d_vocab=len(tokenizer))
    config.update(overrides)
    model = HookedRecurrentLM(RecurrentConfig(**config))
    model.tokenizer = tokenizer
    return model.eval(), tokenizer


def _logits(model: HookedRecurrentLM, tokenizer: CharTokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(tokenizer.encode(TEXT)[None])  # [1, pos, d_vocab]


@pytest.mark.parametrize("family", ["lstm", "gru", "mingru", "s6"])
def test_save_load_round_trip_gives_identical_logits(tmp_path: Path, family: str) -> None:
    model, tokenizer = _model(family)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, provenance={"seed": 0}, metrics={"x": 1})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(_logits(loaded, tokenizer), _logits(model, tokenizer))
    assert loaded.tokenizer == tokenizer and loaded.cfg == model.cfg
    info = read_checkpoint(tmp_path / "ckpt")
    assert info.provenance == {"seed": 0} and info.metrics == {"x": 1}
    assert info.n_parameters() == sum(p.numel() for p in model.parameters())


def test_tied_embeddings_are_stored_once_and_stay_tied(tmp_path: Path) -> None:
    model, tokenizer = _model(tie_embeddings=True)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    stored = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert "embed.weight" in stored and "unembed.weight" not in stored
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.unembed.weight is loaded.embed.weight
    assert torch.equal(_logits(loaded, tokenizer), _logits(model, tokenizer))


def test_float16_storage_loads_back_as_float32(tmp_path: Path) -> None:
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, dtype="float16")
    stored = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(_logits(loaded, tokenizer), _logits(model, tokenizer), atol=2e-2, rtol=0)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    model, tokenizer = _model()
    state = TrainingState(step=3, optimizer={"state": {0: {"m": torch.ones(2)}}}, rng={})
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, training_state=state)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(_logits(loaded, tokenizer), _logits(model, tokenizer))
    resumed = read_checkpoint(tmp_path / "ckpt").load_training_state()
    assert resumed is not None and resumed.step == 3
    for path in (tmp_path / "ckpt").iterdir():
        assert not path.read_bytes().startswith((b"\x80", b"PK")), f"{path.name} looks pickled"


def test_shape_mismatch_names_tensor_and_shapes(tmp_path: Path) -> None:
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    config_path = tmp_path / "ckpt" / "config.json"
    document = json.loads(config_path.read_text())
    document["config"]["d_hidden"] = 10
    config_path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ckpt")
    error = info.value
    assert error.tensor is not None and error.tensor.startswith("blocks.0.mixer")
    assert error.expected != error.actual
    assert error.tensor in str(error) and str(list(error.actual)) in str(error)


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    weights = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(weights)
    tensors.pop("embed.weight")
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match="embed.weight"):
        load_checkpoint(tmp_path / "ckpt")
    tensors["embed.weight"] = model.embed.weight.detach().clone()
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_checkpoint(tmp_path / "ckpt")


def test_vocabulary_size_must_match_config(tmp_path: Path) -> None:
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    CharTokenizer.from_text(TEXT + "Z").save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="d_vocab"):
        load_checkpoint(tmp_path / "ckpt")


def test_failed_write_leaves_previous_checkpoint_whole(tmp_path: Path, monkeypatch) -> None:
    old, tokenizer = _model(seed=0)
    save_checkpoint(tmp_path / "ckpt", old, tokenizer, metrics={"version": "old"})
    new, _ = _model(seed=1)

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", new, tokenizer, metrics={"version": "new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "staging should be removed"
    assert read_checkpoint(tmp_path / "ckpt").metrics == {"version": "old"}
    assert torch.equal(_logits(load_checkpoint(tmp_path / "ckpt"), tokenizer), _logits(old, tokenizer))


def test_killed_process_mid_write_leaves_previous_checkpoint_whole(tmp_path: Path) -> None:
    old, tokenizer = _model(seed=0)
    target = tmp_path / "ckpt"
    save_checkpoint(target, old, tokenizer, metrics={"version": "old"})
    # The child imports only the checkpoint module (not the models), to stay fast.
    script = textwrap.dedent(
        f"""
        import os
        import torch
        from workbench.data.tokenizer import CharTokenizer
        from workbench.training import checkpoint

        class Model(torch.nn.Module):
            def __init__(self, tokenizer):
                super().__init__()
                self.cfg = type("Config", (), {{"d_vocab": len(tokenizer), "to_dict": dict}})()
                self.weight = torch.nn.Parameter(torch.ones(3))

        def die(*args, **kwargs):
            os._exit(9)  # killed after writing the weights, before the config

        checkpoint._write_text = die
        tokenizer = CharTokenizer.load({str(target)!r})
        checkpoint.save_checkpoint({str(target)!r}, Model(tokenizer), tokenizer)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 9, result.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt"]
    assert leftovers and all(name.startswith(".ckpt.tmp-") for name in leftovers)
    assert read_checkpoint(target).metrics == {"version": "old"}
    assert torch.equal(_logits(load_checkpoint(target), tokenizer), _logits(old, tokenizer))
    save_checkpoint(target, old, tokenizer, metrics={"version": "again"})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "a later save removes dead staging"


def test_interrupted_swap_is_recovered_from_backup(tmp_path: Path) -> None:
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    (tmp_path / "ckpt").rename(tmp_path / ".ckpt.old-12345678")  # died between the two renames
    with pytest.warns(UserWarning, match="interrupted"):
        loaded = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(_logits(loaded, tokenizer), _logits(model, tokenizer))


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    model, tokenizer = _model()
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a workbench checkpoint"):
        save_checkpoint(tmp_path, model, tokenizer)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_missing_file_gives_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "absent")
    model, tokenizer = _model()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    (tmp_path / "ckpt" / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="vocab.json is missing"):
        load_checkpoint(tmp_path / "ckpt")


def test_flatten_tensors_round_trips_optimizer_state() -> None:
    model, _ = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, dtype=torch.long)).sum().backward()
    optimizer.step()
    tensors: dict[str, torch.Tensor] = {}
    spec = json.loads(json.dumps(flatten_tensors(optimizer.state_dict(), tensors)))
    restored = unflatten_tensors(spec, tensors)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(restored)
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, values in original["state"].items():
        for key, value in values.items():
            assert torch.equal(fresh.state_dict()["state"][index][key], value)
