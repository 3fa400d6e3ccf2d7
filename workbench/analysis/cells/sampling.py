"""Held-out text drawn from across a corpus split, not from one file's head.

A split's first characters are one file (the stdlib validation split opens with `subprocess.py`, a
third of it docstrings), so a unit that tracks that file's style looks like a general cell. Here
the text is `n_pieces` pieces spread evenly over the split, each cut at a line start where the
lexer is in code at bracket depth 0, so every piece lexes alone as it does in its file, and the
features of the joined pieces are exact. Each piece is recorded after a lead-in of its own context,
so the recurrent state at its first character is the state the model has there in the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from workbench.analysis.cells.features import lexical_state
from workbench.analysis.cells.recording import CellRecording, hook_name, resolve_layers, resolve_quantities
from workbench.analysis.tokens import tokenize, tokenizer_of

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["SampleRun", "TextSample", "clean_line_starts", "join_recordings", "run_sample", "spread_sample"]


def clean_line_starts(text: str, language: str = "python") -> np.ndarray:
    """[n] line starts where the lexer is in code, outside strings and comments, at bracket depth 0:
    a piece of `text` cut at two of them lexes alone exactly as it does in context."""
    lex = lexical_state(text, language)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # [pos]
    newline = np.flatnonzero(codes == ord("\n"))  # [lines]
    clean = (lex.in_string[newline] == 0) & (lex.in_comment[newline] == 0) & (lex.bracket_depth[newline] == 0)
    starts = newline[clean] + 1
    return np.concatenate([[0], starts[starts <= len(text)]]).astype(np.int64)


@dataclass(frozen=True)
class TextSample:
    """Pieces of a source text, joined: `text`, and `spans[i]` = piece i's (start, stop) in the source."""

    text: str
    spans: tuple[tuple[int, int], ...]

    @property
    def offsets(self) -> np.ndarray:
        """[n_pieces + 1] where each piece starts in `text` (and where the last ends)."""
        return np.concatenate([[0], np.cumsum([b - a for a, b in self.spans])]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.text)


def spread_sample(source: str, n_pieces: int, piece_chars: int, language: str = "python") -> TextSample:
    """`n_pieces` pieces of about `piece_chars` characters spread evenly over `source`, each
    starting and ending at a clean line start (`clean_line_starts`)."""
    if n_pieces < 1 or piece_chars < 1:
        raise ValueError(f"n_pieces and piece_chars must be positive, got {n_pieces} and {piece_chars}")
    if len(source) < n_pieces * piece_chars:
        raise ValueError(
            f"source of {len(source):,} characters is too short for {n_pieces} pieces of {piece_chars:,}")
    starts = clean_line_starts(source, language)
    ends = np.concatenate([starts[1:], [len(source)]])  # a piece may also end at the source's end
    spans: list[tuple[int, int]] = []
    for target in np.linspace(0, len(source) - piece_chars, n_pieces):
        lo = max(int(target), spans[-1][1] if spans else 0)
        i = int(np.searchsorted(starts, lo))
        if i >= len(starts):
            break
        a = int(starts[i])
        # the last clean end within piece_chars, if it keeps at least half a piece; else the next one
        j = int(np.searchsorted(ends, a + piece_chars, side="right")) - 1
        if j < 0 or ends[j] - a < piece_chars // 2:
            j = int(np.searchsorted(ends, a + piece_chars))
        if j >= len(ends):
            break
        spans.append((a, int(ends[j])))
    if not spans:
        raise ValueError("no clean line starts to cut pieces at")
    return TextSample("".join(source[a:b] for a, b in spans), tuple(spans))


def _batches(
    model: HookedModel, source: str, sample: TextSample, lead_in: int, batch: int, tokenizer: Any
) -> Iterator[tuple[Tensor, list[tuple[int, int]]]]:
    """Pieces with their lead-in as padded token batches [b, T], and each piece's (lead, length)."""
    tok = tokenizer_of(model, tokenizer)
    for first in range(0, len(sample.spans), batch):
        spans = sample.spans[first : first + batch]
        rows = [tokenize(model, source[a - min(lead_in, a) : b], tok) for a, b in spans]
        width = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)  # [b, T]; padding after a piece never reaches it
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        yield tokens.to(model.device), [(min(lead_in, a), b - a) for a, b in spans]


@dataclass
class SampleRun:
    """A model's run over a `TextSample`: every recorded quantity, and its next-character probabilities."""

    recording: CellRecording
    probs: np.ndarray  # [pos, d_vocab]; row t predicts the character after t in its own file


@torch.no_grad()
def run_sample(
    model: HookedModel,
    source: str,
    sample: TextSample,
    quantities: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    *,
    lead_in: int = 256,
    batch: int = 8,
    tokenizer: Any = None,
) -> SampleRun:
    """Run each piece after `lead_in` characters of its context in `source` (the pieces side by side,
    `batch` at a time); join the pieces into one recording of `sample.text` and its probabilities."""
    layer_list = resolve_layers(model, layers)
    qs = resolve_quantities(model, quantities)
    names = [hook_name(layer, q) for layer in layer_list for q in qs]
    values: dict[tuple[int, str], list[np.ndarray]] = {(layer, q): [] for layer in layer_list for q in qs}
    tokens, probs = [], []
    for ids, pieces in _batches(model, source, sample, lead_in, batch, tokenizer):
        logits, cache = model.run_with_cache(ids, names_filter=names)  # logits [b, T, d_vocab]
        p = logits.float().softmax(-1).cpu()
        for i, (lead, length) in enumerate(pieces):
            tokens.append(ids[i, lead : lead + length].cpu().numpy())
            probs.append(p[i, lead : lead + length].numpy())
            for key in values:
                t = cache[hook_name(*key)][i, lead : lead + length].float().cpu()  # [length, units, ...]
                values[key].append(t.reshape(length, -1).numpy())
    recording = CellRecording(sample.text, np.concatenate(tokens),
                              {k: np.concatenate(v) for k, v in values.items()}, model.cfg.family)
    return SampleRun(recording, np.concatenate(probs))


def join_recordings(*recordings: CellRecording) -> CellRecording:
    """One recording of the texts one after another (each must hold the same layers and quantities)."""
    if not recordings:
        raise ValueError("no recordings to join")
    keys = recordings[0].keys
    for rec in recordings[1:]:
        if rec.keys != keys:
            raise ValueError(f"recordings hold different quantities: {keys} and {rec.keys}")
    return CellRecording("".join(r.text for r in recordings), np.concatenate([r.tokens for r in recordings]),
                         {k: np.concatenate([r.get(*k) for r in recordings]) for k in keys},
                         recordings[0].family)
