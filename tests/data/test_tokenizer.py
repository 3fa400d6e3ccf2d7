"""CharTokenizer: round trips, clear errors for unknown characters and empty input, JSON vocab."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.data.tokenizer import DEFAULT_UNKNOWN_TOKEN, CharTokenizer
from workbench.errors import EmptyInputError, SequenceTooLongError, UnknownCharacterError

TEXT = "def f(x):\n    return x + 1\n"


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


def test_encode_decode_round_trips_text(tokenizer: CharTokenizer) -> None:
    ids = tokenizer.encode(TEXT)
    assert ids.dtype == torch.long and ids.shape == (len(TEXT),)
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.decode(ids.tolist()) == TEXT


def test_vocabulary_is_sorted_with_unknown_token_first(tokenizer: CharTokenizer) -> None:
    assert tokenizer.chars[0] == DEFAULT_UNKNOWN_TOKEN
    assert list(tokenizer.chars[1:]) == sorted(set(TEXT))
    assert tokenizer.unknown_id == 0


def test_min_count_drops_rare_characters() -> None:
    tok = CharTokenizer.from_text("aaab", min_count=2)
    assert tok.chars == (DEFAULT_UNKNOWN_TOKEN, "a")


def test_unknown_character_error_names_character_and_position(tokenizer: CharTokenizer) -> None:
    with pytest.raises(UnknownCharacterError) as info:
        tokenizer.encode("x + é")
    error = info.value
    assert error.char == "é" and error.position == 4
    message = str(error)
    assert "'é'" in message and "U+00E9" in message and "position 4" in message
    assert isinstance(error, ValueError)


def test_map_mode_maps_unknown_characters_to_unknown_token(tokenizer: CharTokenizer) -> None:
    ids = tokenizer.encode("x + é", unknown="map")
    assert ids[4].item() == tokenizer.unknown_id
    assert tokenizer.decode(ids) == "x + " + DEFAULT_UNKNOWN_TOKEN
    mapping = CharTokenizer(tokenizer.chars, unknown_token=DEFAULT_UNKNOWN_TOKEN, unknown="map")
    assert torch.equal(mapping.encode("x + é"), ids)


def test_map_mode_without_unknown_token_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown_token"):
        CharTokenizer(["a", "b"], unknown="map")
    with pytest.raises(ValueError, match="unknown_token"):
        CharTokenizer(["a", "b"]).encode("ac", unknown="map")


def test_empty_input_raises_empty_input_error(tokenizer: CharTokenizer) -> None:
    with pytest.raises(EmptyInputError):
        tokenizer.encode("")
    with pytest.raises(EmptyInputError):
        tokenizer.encode_batch([])
    with pytest.raises(EmptyInputError):
        CharTokenizer.from_text("")


def test_max_length_guard(tokenizer: CharTokenizer) -> None:
    guarded = CharTokenizer(tokenizer.chars, unknown_token=tokenizer.unknown_token, max_length=4)
    assert guarded.encode("x + ").shape == (4,)
    with pytest.raises(SequenceTooLongError, match="max_length=4"):
        guarded.encode("x + 1")
    with pytest.raises(SequenceTooLongError):
        tokenizer.encode("x + 1", max_length=2)


def test_encode_batch_stacks_equal_lengths_and_refuses_ragged(tokenizer: CharTokenizer) -> None:
    batch = tokenizer.encode_batch(["x + 1", "f(x)\n"])
    assert batch.shape == (2, 5)
    assert tokenizer.decode_batch(batch) == ["x + 1", "f(x)\n"]
    with pytest.raises(ValueError, match="equal length"):
        tokenizer.encode_batch(["x", "xx"])


def test_to_strings_gives_visible_labels(tokenizer: CharTokenizer) -> None:
    assert tokenizer.to_strings(tokenizer.encode("f x\n")) == ["f", "␣", "x", "\\n"]


def test_decode_rejects_out_of_range_ids(tokenizer: CharTokenizer) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([len(tokenizer)])


def test_save_load_round_trip_is_readable_json(tmp_path, tokenizer: CharTokenizer) -> None:
    path = tokenizer.save(tmp_path)
    assert path == tmp_path / "vocab.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["chars"] == list(tokenizer.chars)
    loaded = CharTokenizer.load(tmp_path)
    assert loaded == tokenizer
    assert torch.equal(loaded.encode(TEXT), tokenizer.encode(TEXT))


def test_vocabulary_validation() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="must be one of"):
        CharTokenizer(["a"], unknown_token="?")
