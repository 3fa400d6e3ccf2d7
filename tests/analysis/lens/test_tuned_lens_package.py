"""Lens directories of the tuned-lens package: written and read beside ours, weights only ever read with
torch.load(weights_only=True), and (where the package is installed) loaded by the package itself."""

import json
import os
import random
import string

import pytest
import torch

from workbench.analysis.lens import LensMismatchError, TunedLens, collect_residuals
from workbench.analysis.lens.tuned_lens_package import (
    LENS_TYPE,
    PACKAGE_FIELDS,
    is_package_lens,
    package_unembed_hash,
    read_params,
)
from workbench.analysis.planted import planted_affine_lm
from workbench.errors import CheckpointError

_rnd = random.Random(1)
TEXT = "".join(_rnd.choice(string.ascii_letters + " ()\n") for _ in range(4000))


def _fitted_lens(model, seed=0):
    """A lens fitted a few steps, then moved off its fit at random: translators far from the identity."""
    lens = TunedLens.from_model(model).fit(TEXT, steps=8, batch_size=4, seq_len=32, progress=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for translator in lens.translators:
            translator.weight.add_(0.3 * torch.randn(translator.weight.shape, generator=generator))
            translator.bias.add_(0.3 * torch.randn(translator.bias.shape, generator=generator))
    return lens


@pytest.fixture(scope="module")
def fitted():
    model = planted_affine_lm(n_layers=3, norm="layernorm", seed=4)
    return model, _fitted_lens(model)


def _outputs(model, lens):
    tokens = model.to_tokens(TEXT[:64])
    resid, _, _ = collect_residuals(model, tokens)  # [n_readouts, 1, pos, d_model]
    return torch.stack([lens(resid[r], layer) for r, layer in enumerate(lens.layers)])


def test_ours_to_tuned_lens_format_and_back_gives_equal_outputs(fitted, tmp_path):
    model, lens = fitted
    ours = TunedLens.load(lens.save(tmp_path / "ours"), model)
    theirs_dir = ours.save(tmp_path / "theirs", format="tuned-lens")
    assert is_package_lens(theirs_dir) and not is_package_lens(tmp_path / "ours")
    back = TunedLens.load(theirs_dir, model)
    torch.testing.assert_close(_outputs(model, back), _outputs(model, lens), atol=1e-6, rtol=0)
    for key, value in lens.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert back.history_ == lens.history_ and back.training_ == lens.training_
    assert back.model_name == lens.model_name
    # and back again into our format
    again = TunedLens.load(back.save(tmp_path / "again"), model)
    torch.testing.assert_close(_outputs(model, again), _outputs(model, lens), atol=1e-6, rtol=0)


def test_the_written_directory_is_the_packages_format(fitted, tmp_path):
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "params.pt", "workbench.json"]
    config = json.loads((path / "config.json").read_text())
    assert tuple(config) == PACKAGE_FIELDS  # nothing their TunedLensConfig would warn about
    assert config["lens_type"] == LENS_TYPE and config["bias"] is True
    assert config["num_hidden_layers"] == model.cfg.n_layers and config["d_model"] == model.cfg.d_model
    assert config["unembed_hash"] == package_unembed_hash(model)
    state = torch.load(path / "params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{p}" for i in range(model.cfg.n_layers) for p in ("weight", "bias"))
    # their translation, h + Linear(h), decoded by the model's final norm and unembedding
    tokens = model.to_tokens(TEXT[:40])
    resid, _, _ = collect_residuals(model, tokens)
    h = resid[2, 0]  # read-out 1 (block 1), hidden state index 2 in the package's numbering
    by_hand = model.unembed(model.ln_final(h + torch.nn.functional.linear(h, state["2.weight"], state["2.bias"])))
    torch.testing.assert_close(by_hand, lens(resid[2], 1)[0])


def test_their_hash_depends_on_the_unembedding(fitted):
    model, _ = fitted
    other = planted_affine_lm(n_layers=3, norm="layernorm", seed=5)
    assert package_unembed_hash(model) != package_unembed_hash(other)
    assert len(package_unembed_hash(model)) == 64


class _Planted:
    """Unpickling this object would create a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_in_params_is_refused_and_never_run(fitted, tmp_path):
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    marker = tmp_path / "code-ran"
    state = torch.load(path / "params.pt", weights_only=True)
    torch.save({**state, "payload": _Planted(marker)}, path / "params.pt")
    with pytest.raises(CheckpointError, match=r"weights_only=True.*never unpickled.*GLOBAL posix.mkdir"):
        TunedLens.load(path, model)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ([torch.zeros(3)], "should hold the translators' state dict .* found list"),
        ({"0.weight": torch.zeros(2), "note": "text"}, "non-tensor entries"),
    ],
)
def test_params_that_are_not_a_state_dict_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "params.pt")
    with pytest.raises(CheckpointError, match=message):
        read_params(tmp_path / "params.pt")


def test_a_corrupt_params_file_is_refused(fitted, tmp_path):
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    (path / "params.pt").write_bytes(b"not a torch file")
    refused = r"cannot be read with torch.load\(weights_only=True\).*Unsupported operand"
    with pytest.raises(CheckpointError, match=refused):
        TunedLens.load(path, model)


def test_missing_extra_or_misshapen_tensors_are_named(fitted, tmp_path):
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    state = torch.load(path / "params.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "1.weight"}, path / "params.pt")
    with pytest.raises(CheckpointError, match="lacks tensor '1.weight'"):
        TunedLens.load(path, model)
    torch.save({**state, "1.bias": torch.zeros(3)}, path / "params.pt")
    with pytest.raises(CheckpointError, match=r"'1.bias' has shape \[3\].*expects \[8\]"):
        TunedLens.load(path, model)
    torch.save({**state, "7.weight": torch.zeros(8, 8)}, path / "params.pt")
    with pytest.raises(CheckpointError, match="does not have: 7.weight"):
        TunedLens.load(path, model)


def test_a_lens_for_another_model_is_refused(fitted, tmp_path):
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    other = planted_affine_lm(n_layers=3, norm="layernorm", seed=5)
    with pytest.raises(LensMismatchError, match=r"unembed_hash .* Train a lens for it"):
        TunedLens.load(path, other)
    deeper = planted_affine_lm(n_layers=4, norm="layernorm", seed=4)
    with pytest.raises(LensMismatchError, match="num_hidden_layers 3 in the lens, 4 in the model"):
        TunedLens.load(path, deeper)


def test_a_lens_the_package_wrote_loads_without_our_sidecar(fitted, tmp_path):
    """As their `TunedLens.save` writes it: no workbench.json, optionally no bias, no hash."""
    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    (path / "workbench.json").unlink()
    config = json.loads((path / "config.json").read_text())
    config.update(bias=False, unembed_hash=None, base_model_name_or_path="some/model")
    (path / "config.json").write_text(json.dumps(config))
    state = torch.load(path / "params.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k.endswith("weight")}, path / "params.pt")
    loaded = TunedLens.load(path, model)
    assert loaded.model_name == "some/model" and loaded.history_ == []
    for i, translator in enumerate(loaded.translators):
        assert torch.equal(translator.weight, lens.translators[i].weight)
        assert torch.equal(translator.bias, torch.zeros(model.cfg.d_model))


def test_unknown_lens_types_and_save_formats_are_refused(fitted, tmp_path):
    model, lens = fitted
    with pytest.raises(ValueError, match="format must be one of 'workbench', 'tuned-lens', got 'pt'"):
        lens.save(tmp_path / "x", format="pt")
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "lens_type": "mlp_lens"}))
    with pytest.raises(CheckpointError, match="lens_type 'mlp_lens'; only 'linear_tuned_lens'"):
        TunedLens.load(path, model)


def test_the_tuned_lens_package_loads_our_files_and_agrees(fitted, tmp_path):
    """Their own loader (`TunedLens.from_unembed_and_pretrained`: config, hash check, torch.load) on our
    files. Their `Unembed` finds the final norm and unembedding of Hugging Face transformers only, so it
    is given our model's modules; everything after that is their code."""
    try:
        import tuned_lens
        from tuned_lens.nn.unembed import Unembed
    except Exception as error:  # absent, or broken by a newer transformers: say which
        pytest.skip(f"the tuned-lens package cannot be imported here ({type(error).__name__}: {error}); "
                    "it is in the [test] extra and the lock")

    model, lens = fitted
    path = lens.save(tmp_path / "theirs", format="tuned-lens")
    unembed = Unembed.__new__(Unembed)
    torch.nn.Module.__init__(unembed)
    unembed.final_norm, unembed.unembedding = model.ln_final, model.unembed
    assert unembed.unembedding_hash() == package_unembed_hash(model)
    theirs = tuned_lens.TunedLens.from_unembed_and_pretrained(unembed, str(path))
    assert len(theirs) == model.cfg.n_layers
    tokens = model.to_tokens(TEXT[:64])
    resid, _, _ = collect_residuals(model, tokens)
    with torch.no_grad():
        for r, layer in enumerate(lens.layers[:-1]):  # their lens has no translator for the last
            torch.testing.assert_close(theirs(resid[r], r), lens(resid[r], layer), atol=1e-6, rtol=0)
    # and a lens their package saves, we read
    theirs.save(tmp_path / "saved-by-them")
    ours = TunedLens.load(tmp_path / "saved-by-them", model)
    torch.testing.assert_close(_outputs(model, ours), _outputs(model, lens), atol=1e-6, rtol=0)
