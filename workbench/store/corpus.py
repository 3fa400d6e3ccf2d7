"""The corpus an activation store records: text files read in pieces, or token ids, one document each.

A document is one text file or one tensor of token ids. Planning reads each text file once, in
blocks, to count its characters, hash its bytes and note the byte offset of every segment start, so
a shard later reads exactly its own characters without loading the file (memory stays bounded by
the shard, not the corpus). Text needs a character-level tokenizer (one token per character);
for any other tokenizer, tokenize first and pass the ids.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from workbench.data.tokenizer import CharTokenizer
from workbench.errors import EmptyInputError

__all__ = ["CorpusSource", "Document", "describe_corpus", "read_tokens"]

CorpusSource = str | os.PathLike | Tensor | np.ndarray | Sequence[str | os.PathLike | Tensor | np.ndarray]
READ_BLOCK = 4 * 2**20  # bytes per read while planning


@dataclass(frozen=True)
class Document:
    """One document: a text file (`path`) or token ids (`ids`), its length in tokens and hash.

    `byte_offsets[i]` is the byte offset of character `i * segment_tokens` of a text file, so a
    segment is read with one seek.
    """

    name: str
    length: int  # tokens (= characters for text)
    sha256: str
    path: str | None = None
    ids: Tensor | None = None  # [length] int64, for a token corpus
    byte_offsets: tuple[int, ...] = ()

    def describe(self) -> dict[str, object]:
        """The JSON the manifest keeps of this document (never the ids themselves)."""
        return {"name": self.name, "kind": "text" if self.path else "tokens", "tokens": self.length,
                "sha256": self.sha256}


def _as_list(corpus: CorpusSource) -> list[str | os.PathLike | Tensor | np.ndarray]:
    if isinstance(corpus, (str, os.PathLike, Tensor, np.ndarray)):
        return [corpus]
    if isinstance(corpus, Sequence) and corpus:
        return list(corpus)
    raise TypeError(
        "corpus must be a text file path, token ids (a tensor [n]), or a non-empty list of either "
        f"(one document each); got {type(corpus).__name__}"
    )


def _text_document(path: Path, segment_tokens: int) -> Document:
    """Read `path` once in blocks: its characters, its sha256, the byte offset of every segment start."""
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus: no such text file {str(path)!r} (a corpus is text file paths or token-id tensors; "
            "to record a string, write it to a file first)"
        )
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offsets = [0]
    chars = consumed = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
            pending_before = len(decoder.getstate()[0])
            text = decoder.decode(block)
            base = consumed - pending_before  # byte offset of text[0]
            consumed += len(block)
            next_start = len(offsets) * segment_tokens
            while next_start < chars + len(text):
                offsets.append(base + len(text[: next_start - chars].encode("utf-8", errors="replace")))
                next_start += segment_tokens
            chars += len(text)
        chars += len(decoder.decode(b"", final=True))
    if chars == 0:
        raise EmptyInputError(f"corpus: the text file {str(path)!r} is empty")
    return Document(str(path), chars, digest.hexdigest(), path=str(path), byte_offsets=tuple(offsets))


def _token_document(ids: Tensor | np.ndarray, index: int) -> Document:
    tensor = torch.as_tensor(ids)
    if tensor.ndim != 1 or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise TypeError(
            f"corpus document {index}: token ids must be an integer tensor [n]; got dtype {tensor.dtype} "
            f"and shape {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise EmptyInputError(f"corpus document {index} has no tokens")
    tensor = tensor.to(torch.int64).contiguous().cpu()
    digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
    return Document(f"tokens[{index}]", tensor.numel(), digest, ids=tensor)


def describe_corpus(corpus: CorpusSource, segment_tokens: int, tokenizer: object) -> list[Document]:
    """The documents of `corpus` with their lengths and hashes; text requires a `CharTokenizer`."""
    documents = []
    for index, source in enumerate(_as_list(corpus)):
        if isinstance(source, (Tensor, np.ndarray)):
            documents.append(_token_document(source, index))
        elif isinstance(source, (str, os.PathLike)):
            if not isinstance(tokenizer, CharTokenizer):
                raise TypeError(
                    f"corpus: text files need a character-level tokenizer (one token per character); this "
                    f"model's is {type(tokenizer).__name__}: tokenize each document and pass the ids "
                    "(a tensor [n] per document)"
                )
            documents.append(_text_document(Path(source), segment_tokens))
        else:
            raise TypeError(f"corpus document {index}: expected a text file path or token ids, "
                            f"got {type(source).__name__}")
    return documents


def read_tokens(
    document: Document, start: int, stop: int, segment_tokens: int, tokenizer: object, unknown: str,
) -> Tensor:
    """Token ids [stop - start] of `document` from token `start` (a segment start) to `stop`."""
    if document.ids is not None:
        return document.ids[start:stop]
    assert isinstance(tokenizer, CharTokenizer)
    offset = document.byte_offsets[start // segment_tokens]
    with open(document.path, "rb") as handle:  # type: ignore[arg-type]
        handle.seek(offset)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces, have = [], 0
        while have < stop - start:
            block = handle.read(max(4 * (stop - start - have), 4096))
            text = decoder.decode(block, final=not block)
            pieces.append(text)
            have += len(text)
            if not block:
                break
    text = "".join(pieces)[: stop - start]
    if len(text) != stop - start:
        raise OSError(f"corpus file {document.path!r} changed since it was planned: expected "
                      f"{stop - start} characters from character {start}, read {len(text)}")
    return tokenizer.encode(text, unknown=unknown)
