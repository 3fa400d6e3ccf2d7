"""Loading from a local directory (offline), tokenizers, and clear errors for what cannot be opened."""

from __future__ import annotations

import os

import pytest
import torch

from workbench.adapters import CheckpointNotFoundError, UnsupportedModelError, from_transformers

from .conftest import tiny


def word_tokenizer():
    """A 50-word whitespace tokenizer built locally (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 50)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


@pytest.fixture
def checkpoint(tmp_path):
    hf = tiny("mamba")
    hf.save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    return tmp_path, hf


def test_local_directory_loads_model_and_tokenizer_offline(checkpoint, monkeypatch):
    directory, hf = checkpoint
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = from_transformers(directory)
    assert "HF_HUB_OFFLINE" not in os.environ  # set only while loading
    ids = model.to_tokens("w1 w2 w3 w9")
    assert ids.tolist() == [[1, 2, 3, 9]]
    assert model.to_str_tokens("w1 w2") == ["w1", "w2"]
    with torch.no_grad():
        torch.testing.assert_close(model("w4 w5 w6"), hf(torch.tensor([[4, 5, 6]])).logits)


def test_unsupported_class_names_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8))
    with pytest.raises(UnsupportedModelError, match="MambaForCausalLM"):
        from_transformers(gpt)


def test_missing_directory_says_what_to_point_at(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not a checkpoint directory"):
        from_transformers(tmp_path / "nowhere" / "deeper")


def test_directory_without_weights_says_download_first(checkpoint):
    directory, _ = checkpoint
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(CheckpointNotFoundError, match="no weights"):
        from_transformers(directory)


def test_directory_without_config_says_download_first(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="huggingface-cli download"):
        from_transformers(tmp_path)


def test_hub_id_not_in_the_cache_says_how_to_download_and_never_reaches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as error:
        from_transformers("state-spaces/mamba-130m-hf")
    message = str(error.value)
    assert "huggingface-cli download state-spaces/mamba-130m-hf" in message
    assert "from_transformers('./mamba-130m-hf')" in message


def test_unsupported_architecture_in_a_directory_is_refused_before_loading_weights(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8)).save_pretrained(
        tmp_path)
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel"):
        from_transformers(tmp_path)


@pytest.mark.parametrize("name", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_families_without_an_adapter_are_refused_clearly(name):
    from workbench.adapters.loading import _adapter_for

    with pytest.raises(UnsupportedModelError, match="supported classes"):
        _adapter_for(name)


def test_every_adapted_class_exists_in_the_installed_transformers():
    import transformers

    from workbench.adapters import ADAPTERS

    missing = [name for name in ADAPTERS if not hasattr(transformers, name)]
    if missing:
        pytest.skip(f"transformers {transformers.__version__} lacks {missing}")


@pytest.mark.parametrize("family", ["recurrent_gemma", "xlstm"])
def test_griffin_and_xlstm_directories_load_offline_into_their_adapters(family, tmp_path):
    hf = tiny(family)
    hf.save_pretrained(tmp_path)
    model = from_transformers(tmp_path)
    assert type(model).__module__.endswith(family)
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
