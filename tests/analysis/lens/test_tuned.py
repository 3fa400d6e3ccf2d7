"""The tuned lens recovers a planted affine map, trains as Belrose et al. do, and round-trips to disk."""

import json
import random
import string

import pytest
import torch
from safetensors import safe_open

from workbench.analysis.lens import (
    LensMismatchError,
    LogitLens,
    TunedLens,
    collect_residuals,
    evaluate_lenses,
    prediction_trajectory,
)
from workbench.analysis.lens.streaming import streams, windows
from workbench.analysis.planted import planted_affine_lm
from workbench.errors import CheckpointError

_rnd = random.Random(0)
TEXT = "".join(_rnd.choice(string.ascii_letters + " ()\n") for _ in range(30_000))


@pytest.fixture(scope="module")
def planted():
    model = planted_affine_lm(norm="none")
    lens = TunedLens.from_model(model).fit(TEXT, steps=250, progress=False)
    return model, lens


def test_a_planted_affine_map_is_recovered(planted):
    model, lens = planted
    layer = model.planted["layer"]
    translator = lens.translators[layer + 1]  # read-out 0 is the embedding
    a, b = model.planted["A"], model.planted["b"]
    assert (translator.matrix().detach() - a).norm() / a.norm() < 0.05
    assert (translator.bias.detach() - b).norm() / b.norm() < 0.05


def test_the_recovered_lens_has_near_zero_kl_and_beats_the_logit_lens(planted):
    model, lens = planted
    evaluation = evaluate_lenses(model, TEXT[:4000], [LogitLens(model), lens])
    kl = evaluation.metric("kl_bits")
    layer = str(model.planted["layer"])
    assert kl.loc[layer, "tuned lens"] < 2e-3
    assert kl.loc[layer, "logit lens"] > 1.0
    assert (kl["tuned lens"].iloc[:-1] < kl["logit lens"].iloc[:-1]).all()
    assert evaluation.metric("top1_agreement").loc[layer, "tuned lens"] > 0.97


def test_with_a_final_layernorm_the_kl_still_vanishes():
    model = planted_affine_lm(norm="layernorm", seed=1)
    lens = TunedLens.from_model(model).fit(TEXT, steps=150, progress=False)
    kl = evaluate_lenses(model, TEXT[:3000], [LogitLens(model), lens]).metric("kl_bits")
    assert kl.loc["0", "tuned lens"] < 0.01 < 1.0 < kl.loc["0", "logit lens"]


def test_training_uses_nesterov_sgd_with_linear_decay_and_leaves_the_model_alone():
    model = planted_affine_lm(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lens = TunedLens.from_model(model).fit(TEXT, steps=10, batch_size=4, seq_len=16, progress=False)
    assert [row["lr"] for row in lens.history_] == pytest.approx([1.0 - s / 10 for s in range(10)])
    assert lens.training_["optimizer"] == "SGD" and lens.training_["nesterov"] is True
    assert lens.training_["momentum"] == 0.9 and lens.training_["weight_decay"] == 1e-3
    assert lens.training_["tokens_seen"] == 10 * 4 * 16
    assert set(lens.history_[0]) == {"step", "lr", "embed", "0"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert lens.history_[-1]["0"] < lens.history_[0]["0"]


def test_translators_start_as_the_identity():
    model = planted_affine_lm()
    lens = TunedLens.from_model(model)
    assert len(lens.translators) == model.cfg.n_layers  # embed .. n_layers - 2
    for translator in lens.translators:
        assert torch.equal(translator.matrix(), torch.eye(model.cfg.d_model))
        assert torch.equal(translator.bias, torch.zeros(model.cfg.d_model))


def test_save_then_load_round_trips_exactly(planted, tmp_path):
    model, lens = planted
    path = lens.save(tmp_path / "lens")
    loaded = TunedLens.load(path, model)
    for key, value in lens.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.history_ == lens.history_ and loaded.training_ == lens.training_
    tokens = model.to_tokens(TEXT[:50])
    resid, _, _ = collect_residuals(model, tokens)
    assert torch.equal(loaded(resid[1], 0), lens(resid[1], 0))
    # the documented format, readable without our code
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "workbench-tuned-lens" and config["version"] == 1
    assert config["model_name"] == lens.model_name and config["unembedding_sha256"] == lens.unembedding_hash
    assert config["translated"] == ["embed", "0"]
    with safe_open(str(path / "lens.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["translators.0.bias", "translators.0.weight",
                                         "translators.1.bias", "translators.1.weight"]
        w, b = handle.get_tensor("translators.1.weight"), handle.get_tensor("translators.1.bias")
    h = resid[1, 0]  # [pos, d_model]
    by_hand = model.unembed(h + h @ w.T + b)  # the documented translation, decoded (norm "none")
    torch.testing.assert_close(by_hand, lens(resid[1], 0)[0])


def test_a_lens_refuses_a_model_it_was_not_trained_for(planted, tmp_path):
    model, lens = planted
    other = planted_affine_lm(seed=5)
    path = lens.save(tmp_path / "lens")
    with pytest.raises(LensMismatchError, match=r"trained for model .*unembedding .* Train a lens for it"):
        TunedLens.load(path, other)
    with pytest.raises(LensMismatchError):
        evaluate_lenses(other, TEXT[:500], [lens])
    with pytest.raises(LensMismatchError):
        TunedLens.from_model(other).check_model(model)


def test_a_lens_refuses_its_model_once_the_unembedding_changed():
    model = planted_affine_lm(seed=3)
    lens = TunedLens.from_model(model)
    prediction_trajectory(lens, "abc")
    with torch.no_grad():
        model.unembed.bias.add_(0.1)
    with pytest.raises(LensMismatchError, match="unembedding"):
        prediction_trajectory(lens, "abc")


def test_loading_a_missing_or_foreign_directory_says_what_is_wrong(planted, tmp_path):
    model, _ = planted
    with pytest.raises(CheckpointError, match="no tuned lens at .*config.json is missing"):
        TunedLens.load(tmp_path / "nothing", model)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"format": "workbench-checkpoint"}')
    (tmp_path / "other" / "lens.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a tuned lens"):
        TunedLens.load(tmp_path / "other", model)


def test_the_text_streams_cycle_with_the_state_reset_at_each_wrap():
    data = streams(torch.arange(100), batch_size=4, min_length=10)  # [4, 25]
    assert data.shape == (4, 25) and data[1, 0] == 25
    got = list(windows(data, seq_len=10, steps=5))
    assert [w.shape[1] for w, _ in got] == [10] * 5
    assert [reset for _, reset in got] == [True, False, True, False, True]
    assert [w.shape[1] for w, _ in windows(data, seq_len=10)] == [10, 10, 5]
