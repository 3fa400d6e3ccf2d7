"""A character-level tokenizer with an explicit vocabulary, saved as human-readable JSON.

One token per character (Karpathy et al. 2015, *Visualizing and Understanding Recurrent
Networks*), so token positions are character positions: a per-cell heatmap lines up with the text.
The vocabulary is a list of single characters; an optional unknown token (by default U+FFFD, the
Unicode replacement character, itself one character so positions still line up) is part of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from workbench.errors import EmptyInputError, SequenceTooLongError, UnknownCharacterError

__all__ = ["VOCAB_FILENAME", "DEFAULT_UNKNOWN_TOKEN", "CharTokenizer", "display_char"]

VOCAB_FILENAME = "vocab.json"
DEFAULT_UNKNOWN_TOKEN = "\ufffd"
_FORMAT = "workbench-char-vocab"
_VERSION = 1

UnknownPolicy = Literal["error", "map"]

# How a whitespace or control character is shown on a plot axis: visible, and one glyph or escape.
_DISPLAY = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣", "\x0b": "\\v", "\x0c": "\\f"}


def display_char(char: str) -> str:
    """A visible one-token label for `char`: `\\n` for newline, `␣` for space, escapes else."""
    if char in _DISPLAY:
        return _DISPLAY[char]
    if not char.isprintable():
        return repr(char)[1:-1]
    return char


def _codepoints(text: str) -> np.ndarray:
    """Unicode code points of `text` as a uint32 array [len(text)], without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class CharTokenizer:
    """Maps characters to ids and back with a fixed, explicit vocabulary.

    `unknown` sets what `encode` does with a character outside the vocabulary: `"error"` (the
    default) raises `UnknownCharacterError` naming it and its position; `"map"` maps it to
    `unknown_token`, which must then be in the vocabulary. `max_length`, if set, is a guard:
    longer inputs raise `SequenceTooLongError`.
    """

    def __init__(
        self,
        chars: Sequence[str],
        unknown_token: str | None = None,
        unknown: UnknownPolicy = "error",
        max_length: int | None = None,
    ):
        chars = list(chars)
        if not chars:
            raise EmptyInputError("a tokenizer needs at least one character in its vocabulary")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters; got {bad[:5]!r}")
        seen: set[str] = set()
        duplicates = [c for c in chars if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
        if duplicates:
            raise ValueError(f"vocabulary has duplicate characters {duplicates[:5]!r}")
        if unknown_token is not None and unknown_token not in seen:
            raise ValueError(f"unknown_token {unknown_token!r} must be one of the vocabulary's characters")
        self._check_policy(unknown, unknown_token)
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.chars: tuple[str, ...] = tuple(chars)
        self.unknown_token = unknown_token
        self.unknown: UnknownPolicy = unknown
        self.max_length = max_length
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        # Sorted code points and their ids, for vectorised lookup with np.searchsorted.
        points = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        order = np.argsort(points, kind="stable")
        self._sorted_points = points[order]
        self._sorted_ids = order.astype(np.int64)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_text(
        cls,
        text: str,
        min_count: int = 1,
        unknown_token: str | None = DEFAULT_UNKNOWN_TOKEN,
        unknown: UnknownPolicy = "error",
        max_length: int | None = None,
    ) -> CharTokenizer:
        """Vocabulary of every character seen at least `min_count` times in `text`, by code point.

        The unknown token (if not None) comes first, so its id is 0 whatever the text; characters
        seen fewer than `min_count` times are left out and become unknown.
        """
        if not text:
            raise EmptyInputError("cannot build a vocabulary from empty text")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        points, counts = np.unique(_codepoints(text), return_counts=True)
        chars = [chr(p) for p, n in zip(points.tolist(), counts.tolist(), strict=True) if n >= min_count]
        if unknown_token is not None:
            chars = [unknown_token] + [c for c in chars if c != unknown_token]
        if not chars:
            raise EmptyInputError(f"no character occurs at least min_count={min_count} times")
        return cls(chars, unknown_token=unknown_token, unknown=unknown, max_length=max_length)

    # ----------------------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    # The special-token ids a Hugging Face tokenizer has, which SAELens's activation store reads: a
    # character model has none (it starts from its initial state, not from a BOS token).
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    sep_token_id: int | None = None
    pad_token_id: int | None = None

    @property
    def unknown_id(self) -> int | None:
        return None if self.unknown_token is None else self.stoi[self.unknown_token]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return (self.chars, self.unknown_token) == (other.chars, other.unknown_token)

    def __hash__(self) -> int:
        return hash((self.chars, self.unknown_token))

    def __repr__(self) -> str:
        shown = "".join(display_char(c) for c in self.chars[:40])
        more = "..." if len(self.chars) > 40 else ""
        return (
            f"CharTokenizer({len(self)} characters: '{shown}{more}', "
            f"unknown_token={self.unknown_token!r}, unknown={self.unknown!r})"
        )

    # ----------------------------------------------------------------------------- encode
    def encode(
        self, text: str, unknown: UnknownPolicy | None = None, max_length: int | None = None
    ) -> Tensor:
        """text -> ids, LongTensor [pos]; `unknown`, `max_length` override the tokenizer's own."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; use encode_batch for lists")
        if not text:
            raise EmptyInputError("cannot encode empty text: a model needs at least one token")
        limit = self.max_length if max_length is None else max_length
        if limit is not None and len(text) > limit:
            raise SequenceTooLongError(len(text), limit)
        policy = self.unknown if unknown is None else unknown
        self._check_policy(policy, self.unknown_token)
        points = _codepoints(text)  # [pos]
        where = np.searchsorted(self._sorted_points, points)  # [pos]
        where = np.minimum(where, len(self._sorted_points) - 1)
        known = self._sorted_points[where] == points  # [pos] bool
        ids = self._sorted_ids[where]  # [pos] int64
        if not known.all():
            first = int(np.argmin(known))
            if policy == "error":
                raise UnknownCharacterError(text[first], first, text=text, vocab_size=len(self))
            ids = np.where(known, ids, self.unknown_id)
        return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))

    def encode_batch(
        self,
        texts: Iterable[str],
        unknown: UnknownPolicy | None = None,
        max_length: int | None = None,
    ) -> Tensor:
        """Equal-length texts -> ids, LongTensor [batch, pos]. No padding: lengths must agree."""
        texts = list(texts)
        if not texts:
            raise EmptyInputError("cannot encode an empty batch")
        lengths = [len(t) if isinstance(t, str) else -1 for t in texts]
        if len(set(lengths)) != 1:
            raise ValueError(
                "encode_batch needs texts of equal length (there is no padding token); got "
                f"lengths {lengths[:10]}{'...' if len(lengths) > 10 else ''}; truncate them to a "
                "common length"
            )
        return torch.stack([self.encode(t, unknown=unknown, max_length=max_length) for t in texts])

    # ----------------------------------------------------------------------------- decode
    def _ids_list(self, ids: Tensor | np.ndarray | Sequence[int] | int) -> list[int]:
        if isinstance(ids, Tensor | np.ndarray):
            values = ids.tolist()
        elif isinstance(ids, int):
            values = [ids]
        else:
            values = list(ids)
        if values and isinstance(values[0], list):
            raise ValueError("expected a 1-D sequence of ids; for [batch, pos] use decode_batch")
        bad = [i for i in values if not 0 <= int(i) < len(self.chars)]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (size {len(self)})")
        return [int(i) for i in values]

    def decode(self, ids: Tensor | np.ndarray | Sequence[int] | int) -> str:
        """ids [pos] -> text, one character per id."""
        return "".join(self.chars[i] for i in self._ids_list(ids))

    def decode_batch(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """ids [batch, pos] -> one text per row."""
        return [self.decode(row) for row in ids]

    def to_strings(self, ids: Tensor | np.ndarray | Sequence[int] | int) -> list[str]:
        """ids [pos] -> one visible label per token (for plot axes): `\\n`, `␣`, escapes."""
        return [display_char(self.chars[i]) for i in self._ids_list(ids)]

    # ----------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "chars": list(self.chars),
            "unknown_token": self.unknown_token,
            "unknown": self.unknown,
            "max_length": self.max_length,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a workbench character vocabulary (format={data.get('format')!r})")
        if data.get("version", 0) > _VERSION:
            raise ValueError(f"vocabulary version {data['version']} is newer than this workbench reads")
        return cls(
            data["chars"],
            unknown_token=data.get("unknown_token"),
            unknown=data.get("unknown", "error"),
            max_length=data.get("max_length"),
        )

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON to `path/vocab.json` (a directory) or `path` (a .json)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / VOCAB_FILENAME
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a vocabulary written by `save` (a `vocab.json`, or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILENAME
        if not path.exists():
            raise FileNotFoundError(f"no vocabulary at {path}")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    @staticmethod
    def _check_policy(policy: str, unknown_token: str | None) -> None:
        if policy not in ("error", "map"):
            raise ValueError(f"unknown={policy!r}; use 'error' or 'map'")
        if policy == "map" and unknown_token is None:
            raise ValueError("unknown='map' needs a vocabulary with an unknown_token; this one has none")
