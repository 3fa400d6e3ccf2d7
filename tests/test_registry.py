"""The registry: load by embedded name or by path, list models as rows, name the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench import registry
from workbench.registry import ModelTable, UnknownModelError, list_models, load, resolve
from workbench.training import train
from workbench.training.train import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and other processes on the cores cannot stall it."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    train(
        max_bytes=20_000, steps=3, n_layers=1, d_model=16, batch_size=4, seq_len=32, min_count=1,
        out=root / "tiny-lstm", progress=False, threads=1, eval_chars=1_000, test_chars=1_000,
    )  # fmt: skip
    (root / "not-a-checkpoint").mkdir()
    return root


def test_load_by_name_and_by_path_give_the_same_model(checkpoints: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", checkpoints)
    by_name = load("tiny-lstm")
    by_path = load(checkpoints / "tiny-lstm", path="reference")
    assert by_name.path == "fused" and by_path.path == "reference"
    tokens = by_name.tokenizer.encode("import os\n")[None]
    torch.testing.assert_close(by_name(tokens), by_path(tokens), atol=1e-5, rtol=1e-5)


def test_list_models_returns_rows_and_prints_a_table(checkpoints: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", checkpoints)
    rows = list_models()
    assert isinstance(rows, ModelTable) and len(rows) == 1
    row = rows[0]
    assert row["name"] == "tiny-lstm" and row["family"] == "lstm" and row["corpus"] == "python-stdlib"
    assert row["parameters"] == sum(p.numel() for p in load("tiny-lstm").parameters())
    assert row["test_bpc"] > 0 and row["command"].startswith("workbench train")
    table = str(rows)
    assert table.splitlines()[0].split()[:3] == ["name", "family", "n_layers"]
    assert "tiny-lstm" in table and "<table>" in rows._repr_html_()


def test_unknown_name_lists_known_models(checkpoints: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", checkpoints)
    with pytest.raises(UnknownModelError) as info:
        resolve("tiny-gru")
    assert "'tiny-lstm'" in str(info.value) and isinstance(info.value, KeyError)


def test_empty_registry_lists_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", tmp_path / "absent")
    assert list_models() == [] and "no embedded models" in str(list_models())
