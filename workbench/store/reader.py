"""Reading a store: shard-by-shard tensors, a `torch.utils.data.Dataset` of tokens, merged reductions.

Nothing is read before it is asked for: `iter_tensors` holds one shard (or one chunk of one) at a
time, and the dataset reads single rows through safetensors' slices.
"""

from __future__ import annotations

import bisect
import json
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from workbench.errors import UnknownHookError
from workbench.store.reductions import HookStats, stats_from_tensors
from workbench.store.writer import FORMAT, MANIFEST, REDUCTIONS_FILE

__all__ = ["ActivationStore", "StoreDataset", "TopContext", "open_store"]


@dataclass(frozen=True)
class TopContext:
    """One of a unit's top activations: its value, corpus token position and the text around it."""

    value: float
    position: int
    before: str  # the `width` characters up to the token (excluded)
    token: str
    after: str


class ActivationStore:
    """A finished recording on disk (`manifest.json`, `shard-*.safetensors`, `reductions.safetensors`)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no activation store at {str(self.directory)!r}: {MANIFEST} is missing")
        self.manifest = json.loads(path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an activation store (format {self.manifest.get('format')!r})")
        if self.manifest.get("status") != "complete":
            raise ValueError(f"the store at {str(self.directory)!r} is not finished (status "
                             f"{self.manifest.get('status')!r}): rerun the same record call to resume it")
        self.plan = self.manifest["plan"]
        self.shards = self.manifest["shards"]
        self._starts = [s["token_start"] for s in self.shards]

    @property
    def hooks(self) -> list[str]:
        return list(self.plan["hooks"])

    @property
    def n_tokens(self) -> int:
        return int(self.plan["corpus"]["tokens"])

    def shape(self, hook: str) -> tuple[int, ...]:
        """The hook's shape at one token."""
        return tuple(self.plan["hooks"][self._check_hook(hook)])

    def _check_hook(self, hook: str) -> str:
        if hook not in self.plan["hooks"]:
            raise UnknownHookError(hook, message=f"hook {hook!r} is not in this store; it holds {self.hooks}")
        return hook

    def _check_raw(self, hook: str) -> str:
        self._check_hook(hook)
        if not self.plan["raw"]:
            raise ValueError(f"this store kept only reductions ({self.plan['reductions']}), no raw tensors of "
                             f"{hook!r}; record again with raw=True")
        return hook

    # ----------------------------------------------------------------------------- tensors
    def iter_tensors(self, hook: str, chunk_tokens: int | None = None) -> Iterator[Tensor]:
        """The hook's values in corpus order, [n, ...] per shard (or per `chunk_tokens` of one)."""
        self._check_raw(hook)
        for shard in self.shards:
            with safe_open(str(self.directory / shard["file"]), framework="pt") as handle:
                if chunk_tokens is None:
                    yield handle.get_tensor(hook)
                    continue
                view = handle.get_slice(hook)
                n = view.get_shape()[0]
                for start in range(0, n, chunk_tokens):
                    yield view[start : start + chunk_tokens]

    def iter_tokens(self) -> Iterator[Tensor]:
        """The corpus token ids, [n] int64 per shard."""
        for shard in self.shards:
            with safe_open(str(self.directory / shard["file"]), framework="pt") as handle:
                yield handle.get_tensor("tokens")

    def tokens(self, start: int, stop: int) -> Tensor:
        """Token ids [stop - start] of the corpus positions [start, stop)."""
        return self._slice("tokens", start, stop)

    def values(self, hook: str, start: int, stop: int) -> Tensor:
        """The hook's values [stop - start, ...] at corpus positions [start, stop), read across shards."""
        self._check_raw(hook)
        return self._slice(hook, start, stop)

    def _slice(self, key: str, start: int, stop: int) -> Tensor:
        start, stop = max(0, start), min(self.n_tokens, stop)
        pieces = []
        for shard in self.shards:
            lo, hi = max(start, shard["token_start"]), min(stop, shard["token_stop"])
            if lo < hi:
                with safe_open(str(self.directory / shard["file"]), framework="pt") as handle:
                    base = shard["token_start"]
                    pieces.append(handle.get_slice(key)[lo - base : hi - base])
        if pieces:
            return torch.cat(pieces)
        if key == "tokens":
            return torch.zeros(0, dtype=torch.int64)
        return torch.zeros((0, *self.shape(key)), dtype=getattr(torch, self.plan["dtype"]))

    def document_ranges(self) -> list[tuple[int, int]]:
        """Corpus positions [start, stop) of each document (text file or token tensor), in order."""
        ranges, start = [], 0
        for document in self.plan["corpus"]["documents"]:
            ranges.append((start, start + document["tokens"]))
            start += document["tokens"]
        return ranges

    def dataset(self, hook: str, *, with_tokens: bool = False) -> StoreDataset:
        """A `torch.utils.data.Dataset` of the hook's value at each corpus token."""
        return StoreDataset(self, self._check_raw(hook), with_tokens)

    # ----------------------------------------------------------------------------- reductions
    def stats(self, hook: str) -> HookStats:
        """The hook's merged reductions over the whole corpus (see `workbench.store.reductions`)."""
        self._check_hook(hook)
        if not self.plan["reductions"]:
            raise ValueError("this store has no reductions; record with reductions=('moments', ...)")
        prefix = f"{hook}/"
        with safe_open(str(self.directory / REDUCTIONS_FILE), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
        return stats_from_tensors(tensors, prefix)

    def top_contexts(self, hook: str, unit: int, *, width: int = 30) -> list[TopContext]:
        """The unit's top activations with `width` tokens of text each side (Karpathy et al. 2015)."""
        stats = self.stats(hook)
        if stats.top_values is None:
            raise ValueError("this store has no 'topk' reduction; record with reductions=('topk', ...)")
        units = stats.top_values.shape[1]
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < units:
            raise IndexError(f"unit must be in 0..{units - 1} for {hook!r}, got {unit!r}")
        decode = self._decoder()
        out = []
        for value, position in zip(stats.top_values[:, unit].tolist(), stats.top_positions[:, unit].tolist(),
                                   strict=True):
            ids = self.tokens(position - width, position + width + 1)
            at = min(width, position)
            out.append(TopContext(value, position, decode(ids[:at]), decode(ids[at : at + 1]),
                                  decode(ids[at + 1 :])))
        return out

    def _decoder(self):  # noqa: ANN202  (a callable ids -> str)
        document = self.manifest.get("tokenizer")
        if document is None:
            return lambda ids: " ".join(map(str, ids.tolist()))
        from workbench.data.tokenizer import CharTokenizer

        tokenizer = CharTokenizer.from_dict(document)
        return lambda ids: tokenizer.decode(ids) if ids.numel() else ""

    # ----------------------------------------------------------------------------- locating
    def locate(self, position: int) -> tuple[dict, int]:
        """(the shard holding corpus token `position`, the row within it)."""
        if not 0 <= position < self.n_tokens:
            raise IndexError(f"token position must be in 0..{self.n_tokens - 1}, got {position}")
        index = bisect.bisect_right(self._starts, position) - 1
        return self.shards[index], position - self.shards[index]["token_start"]

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.directory)!r}: {self.n_tokens:,} tokens, {len(self.shards)} shards, "
                f"hooks {self.hooks}, dtype {self.plan['dtype']}, reductions {self.plan['reductions']})")


class StoreDataset(Dataset):
    """Item i: the hook's value at corpus token i [...] (and the token id, with `with_tokens`)."""

    def __init__(self, store: ActivationStore, hook: str, with_tokens: bool = False):
        self.store, self.hook, self.with_tokens = store, hook, with_tokens
        self._handles: dict[str, object] = {}  # one open file per shard, opened on first use

    def __len__(self) -> int:
        return self.store.n_tokens

    def _handle(self, file: str):  # noqa: ANN202  (a safetensors handle)
        if file not in self._handles:
            self._handles[file] = safe_open(str(self.store.directory / file), framework="pt")
        return self._handles[file]

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, int]:
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = operator.index(index)
        if index < 0:
            index += len(self)
        shard, row = self.store.locate(index)
        handle = self._handle(shard["file"])
        value = handle.get_slice(self.hook)[row : row + 1][0]
        if self.with_tokens:
            return value, int(handle.get_slice("tokens")[row : row + 1][0])
        return value

    def __getstate__(self) -> dict:  # DataLoader workers reopen the files
        return {**self.__dict__, "_handles": {}}


def open_store(directory: str | os.PathLike[str]) -> ActivationStore:
    """Open a finished store."""
    return ActivationStore(directory)
