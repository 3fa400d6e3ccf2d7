"""The training loop: deterministic seeds, exact resume, falling loss, bpc recorded in the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.data.tokenizer import CharTokenizer
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.training import evaluate_bpc, read_checkpoint, train
from workbench.training.train import learning_rate, reproduce_command

TINY = dict(
    corpus="python-stdlib",
    max_bytes=30_000,
    n_layers=1,
    d_model=16,
    d_hidden=16,
    batch_size=4,
    seq_len=32,
    min_count=1,
    eval_chars=2_000,
    test_chars=2_000,
    progress=False,
    threads=1,  # tiny models: one thread is fastest, and immune to other processes on the cores
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    a = train(**TINY, steps=5, seed=3, out=tmp_path / "a")
    b = train(**TINY, steps=5, seed=3, out=tmp_path / "b")
    _assert_same_weights(a, b)
    c = train(**TINY, steps=5, seed=4, out=tmp_path / "c")
    assert not torch.equal(_weights(a)["embed.weight"], _weights(c)["embed.weight"])


def test_resume_equals_uninterrupted_training(tmp_path: Path) -> None:
    # 90 windows of 32 characters per stream: step 6 crosses no wrap, so the state is carried.
    whole = train(**TINY, steps=8, eval_every=4, out=tmp_path / "whole")
    part = train(**TINY, steps=8, eval_every=4, stop_at=5, out=tmp_path / "part")
    halfway = read_checkpoint(part)
    assert halfway.provenance["steps"] == 5 and "test_bpc" not in halfway.metrics
    state = halfway.load_training_state()
    assert state is not None and state.step == 5 and state.carried_state is not None
    resumed = train(**TINY, steps=8, eval_every=4, resume=True, out=part)
    _assert_same_weights(whole, resumed)
    assert read_checkpoint(resumed).metrics["history"] == read_checkpoint(whole).metrics["history"]


def test_resume_with_half_precision_weights_uses_float32_master_copy(tmp_path: Path) -> None:
    whole = train(**TINY, steps=6, out=tmp_path / "whole")
    part = train(**TINY, steps=6, stop_at=3, weights_dtype="float16", out=tmp_path / "part")
    resumed = train(**TINY, steps=6, weights_dtype="float16", resume=True, out=part)
    loaded = read_checkpoint(resumed).load_training_state()
    assert loaded is not None and loaded.master_weights is not None
    for name, tensor in _weights(whole).items():
        assert torch.equal(loaded.master_weights[name], tensor)


def test_resume_refuses_changed_settings_and_overwrite_needs_consent(tmp_path: Path) -> None:
    out = train(**TINY, steps=2, out=tmp_path / "run")
    with pytest.raises(FileExistsError, match="resume"):
        train(**TINY, steps=2, out=out)
    with pytest.raises(ValueError, match="seq_len"):
        train(**{**TINY, "seq_len": 16}, steps=4, resume=True, out=out)
    train(**TINY, steps=2, overwrite=True, out=out)


def test_loss_decreases_and_metrics_are_recorded(tmp_path: Path) -> None:
    out = train(
        **{**TINY, "d_model": 32, "d_hidden": 32}, steps=60, lr=1e-2, eval_every=20, out=tmp_path / "r"
    )
    checkpoint = read_checkpoint(out)
    history = checkpoint.metrics["history"]
    train_bpc = [bpc for _, bpc in history["train_bpc"]]
    val_bpc = [bpc for _, bpc in history["validation_bpc"]]
    assert train_bpc[-1] < train_bpc[0] - 0.5, train_bpc
    assert val_bpc[-1] < val_bpc[0], val_bpc
    assert 0 < checkpoint.metrics["test_bpc"] < math.log2(len(checkpoint.tokenizer))
    provenance = checkpoint.provenance
    assert provenance["steps"] == 60 and provenance["seed"] == 0
    assert provenance["command"].startswith("workbench train --corpus python-stdlib --family lstm")
    assert len(provenance["corpus_fingerprint"]) == 16


def test_evaluate_bpc_of_uniform_model_is_log2_vocab() -> None:
    tokenizer = CharTokenizer.from_text("abcdefgh")
    model = HookedRecurrentLM(RecurrentConfig(family="gru", n_layers=1, d_model=8, d_hidden=8, d_vocab=9))
    with torch.no_grad():
        model.unembed.weight.zero_()
        model.unembed.bias.zero_()
    bpc = evaluate_bpc(model, tokenizer, "abcdefgh" * 20, batch_size=3, seq_len=7)
    assert bpc == pytest.approx(math.log2(9), abs=1e-5)


def test_learning_rate_warms_up_then_decays_to_floor() -> None:
    rates = [learning_rate(s, 1.0, 100, 10, 0.1) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert learning_rate(100, 1.0, 100, 10, 0.1) == pytest.approx(0.1)


def test_reproduce_command_lists_weight_settings() -> None:
    command = reproduce_command({"corpus": "linux", "family": "gru", "n_layers": 3, "steps": 9, "seed": 1})
    assert command == "workbench train --corpus linux --family gru --layers 3 --steps 9 --seed 1"


def test_train_takes_a_config_and_keywords_replace_its_fields(tmp_path: Path) -> None:
    from dataclasses import fields

    from workbench.training import TrainConfig
    from workbench.training.train import TRAIN_OPTIONS

    config = TrainConfig(**{**TINY, "steps": 3, "seed": 3}, out=tmp_path / "config")
    by_config = train(config)
    by_keywords = train(**TINY, steps=3, seed=3, out=tmp_path / "keywords")
    _assert_same_weights(by_config, by_keywords)
    assert read_checkpoint(by_config).provenance["train_args"]["seed"] == 3
    overridden = train(config, out=tmp_path / "override", steps=2)  # keywords win over the config
    assert read_checkpoint(overridden).provenance["steps"] == 2
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert all(option.default == defaults[option.name] for option in TRAIN_OPTIONS)
    with pytest.raises(TypeError):
        train(config, no_such_setting=1)
