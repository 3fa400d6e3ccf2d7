"""The deterministic plan of a recording: segments (where the state resets) grouped into shards.

Every document is cut into segments of `segment_tokens` tokens (the last one of a document shorter);
each segment starts from the model's initial state and carries its state across windows to its end.
A shard is up to `segments_per_shard` consecutive segments, recorded as the rows of one batch, and
written as one file. The plan depends only on the corpus, the model and the settings, never on how
many workers run it, so a serial run and a run of one worker per shard write byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from workbench.errors import MemoryBudgetError, UnknownHookError, format_bytes
from workbench.store.corpus import CorpusSource, Document, describe_corpus

if TYPE_CHECKING:
    from workbench.models.language_model import HookedLanguageModel

__all__ = ["DTYPES", "REDUCTIONS", "RecordPlan", "Segment", "ShardSpec", "model_fingerprint", "plan_shards"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REDUCTIONS = ("moments", "covariance", "topk", "histogram")
MAX_COVARIANCE_UNITS = 8192  # a [units, units] float64 co-moment: 512 MiB at this size
MAX_WINDOW = 2048  # positions per forward within a segment; longer windows gain nothing on CPU kernels


@dataclass(frozen=True)
class Segment:
    """Tokens [start, stop) of document `document`, at corpus positions [token_start, ...)."""

    document: int
    start: int
    stop: int
    token_start: int

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShardSpec:
    """One shard: consecutive segments, recorded as the rows of one batch into one file."""

    index: int
    segments: tuple[Segment, ...]

    @property
    def token_start(self) -> int:
        return self.segments[0].token_start

    @property
    def token_stop(self) -> int:
        return self.segments[-1].token_start + self.segments[-1].length

    @property
    def n_tokens(self) -> int:
        return self.token_stop - self.token_start

    @property
    def file_name(self) -> str:
        return f"shard-{self.index:05d}.safetensors"


@dataclass(frozen=True)
class RecordPlan:
    """What to record, from what, into which shards; `describe()` is the manifest's JSON of it."""

    model: dict[str, str]  # name, family, fingerprint, dtype
    documents: tuple[Document, ...]
    hooks: dict[str, tuple[int, ...]]  # hook -> its shape at one token
    shards: tuple[ShardSpec, ...]
    segment_tokens: int
    segments_per_shard: int
    dtype: str
    raw: bool
    reductions: tuple[str, ...]
    topk: int
    histogram: tuple[float, float, int]  # low, high, bins
    window: int
    path: str
    unknown: str
    tokenizer: dict | None = field(default=None, compare=False)

    @property
    def n_tokens(self) -> int:
        return sum(d.length for d in self.documents)

    @property
    def corpus_sha256(self) -> str:
        joined = "".join(d.sha256 for d in self.documents)
        return hashlib.sha256(joined.encode()).hexdigest()

    def describe(self) -> dict[str, object]:
        """Everything that decides the shards' bytes, as JSON (the manifest's `plan`)."""
        return {
            "model": self.model,
            "corpus": {"sha256": self.corpus_sha256, "tokens": self.n_tokens,
                       "documents": [d.describe() for d in self.documents]},
            "hooks": {name: list(shape) for name, shape in self.hooks.items()},
            "segment_tokens": self.segment_tokens, "segments_per_shard": self.segments_per_shard,
            "dtype": self.dtype, "raw": self.raw, "reductions": list(self.reductions), "topk": self.topk,
            "histogram": list(self.histogram), "window": self.window, "path": self.path,
            "unknown": self.unknown,
            "shards": [[[s.document, s.start, s.stop, s.token_start] for s in shard.segments]
                       for shard in self.shards],
        }

    @property
    def sha256(self) -> str:
        """The plan's identity: a resumed or parallel run must have the same."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(model: HookedLanguageModel) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes): a resume with other
    weights is refused."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _per_token_shapes(model: HookedLanguageModel, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    sizes = model.dimension_sizes(1, 1)
    specs = model.hook_specs()
    shapes = {}
    for name in names:
        dims = specs[name][0]
        if dims[:2] != ("batch", "pos"):
            raise UnknownHookError(name, message=(
                f"hooks: {name!r} has no position axis (its dims are {list(dims)}); a store records "
                "per-token hooks [batch, pos, ...]"))
        shapes[name] = tuple(sizes[d] for d in dims[2:])
    return shapes


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _check_reductions(reductions: Sequence[str], raw: bool, shapes: dict[str, tuple[int, ...]],
                      histogram: tuple[float, float, int]) -> tuple[str, ...]:
    if isinstance(reductions, str):
        reductions = [reductions]
    chosen = tuple(dict.fromkeys(reductions))
    unknown = [r for r in chosen if r not in REDUCTIONS]
    if unknown:
        raise ValueError(f"reductions: unknown {unknown}; choose from {list(REDUCTIONS)}")
    if not raw and not chosen:
        raise ValueError("raw=False with no reductions would record nothing: keep raw tensors or name "
                         f"reductions from {list(REDUCTIONS)}")
    if "covariance" in chosen:
        for name, shape in shapes.items():
            if math.prod(shape) > MAX_COVARIANCE_UNITS:
                raise ValueError(
                    f"reductions: covariance of {name!r} ({math.prod(shape):,} units) needs a "
                    f"{format_bytes(8 * math.prod(shape) ** 2)} matrix; at most {MAX_COVARIANCE_UNITS:,} units "
                    "are allowed: record that hook without 'covariance'")
    if "histogram" in chosen:
        low, high, bins = histogram
        if not (float(low) < float(high)) or isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"histogram must be (low, high, bins) with low < high and bins >= 1, got {histogram!r}")
    return chosen


def plan_segments(documents: Sequence[Document], segment_tokens: int, per_shard: int) -> tuple[ShardSpec, ...]:
    """Cut every document at multiples of `segment_tokens`; group consecutive segments into shards."""
    segments, token = [], 0
    for index, document in enumerate(documents):
        for start in range(0, document.length, segment_tokens):
            stop = min(start + segment_tokens, document.length)
            segments.append(Segment(index, start, stop, token + start))
        token += document.length
    return tuple(ShardSpec(i, tuple(segments[s : s + per_shard]))
                 for i, s in enumerate(range(0, len(segments), per_shard)))


def plan_shards(
    model: HookedLanguageModel,
    corpus: CorpusSource,
    hooks: str | Sequence[str],
    *,
    segment_tokens: int = 16_384,
    segments_per_shard: int = 8,
    dtype: str = "float32",
    raw: bool = True,
    reductions: Sequence[str] = (),
    topk: int = 16,
    histogram: tuple[float, float, int] = (-1.0, 1.0, 40),
    window: int | None = None,
    path: str | None = None,
    unknown: str = "map",
    memory_budget_bytes: int | None = None,
) -> RecordPlan:
    """The plan of recording `hooks` of `model` over `corpus` (see the module docstring).

    `dtype` is the stored dtype of raw tensors (float32, float16 or bfloat16; reductions are always
    float64 from the model's own values). `unknown`: "map" or "error" for characters outside the
    vocabulary. `window`: positions per forward (None: `segment_tokens`, at most 2,048; a fixed default,
    so a resumed run plans the same shards on a machine with other free memory).
    A shard's buffers (twice its raw bytes while it is written) plus one window's forward must fit the
    memory budget, else `MemoryBudgetError` says which setting to lower.
    """
    from workbench.models.cache import memory_budget
    from workbench.models.memory import estimate_call, fitting_window

    _check_positive(segment_tokens=segment_tokens, segments_per_shard=segments_per_shard, topk=topk)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if unknown not in ("map", "error"):
        raise ValueError(f"unknown must be 'map' or 'error', got {unknown!r}")
    names = model.resolve_names(hooks)
    if not names:
        raise ValueError(f"hooks: {hooks!r} selects no hook; see model.hook_table()")
    shapes = _per_token_shapes(model, names)
    chosen = _check_reductions(reductions, raw, shapes, histogram)
    path = model.resolve_path(path)
    documents = tuple(describe_corpus(corpus, segment_tokens, model.tokenizer))
    rows = min(segments_per_shard, sum(math.ceil(d.length / segment_tokens) for d in documents))
    budget = memory_budget_bytes or memory_budget(model.device)
    if window is None:  # fixed, not from the free memory: a resumed run must plan the same shards
        window = min(MAX_WINDOW, segment_tokens)
    _check_positive(window=window)
    shard_bytes = (2 * rows * segment_tokens * sum(math.prod(s) for s in shapes.values())
                   * DTYPES[dtype].itemsize if raw else 0)
    forward = estimate_call(model, rows, window, recorded=names, return_type=None, path=path).total
    if shard_bytes + forward > budget:
        fits = fitting_window(model, rows, max(budget - shard_bytes, 0), names, path)
        raise MemoryBudgetError(
            shard_bytes + forward, budget, what=f"recording shards of {rows} x {segment_tokens:,} tokens",
            parts={"shard buffers (raw tensors, twice while written)": shard_bytes, "one window's forward": forward},
            hint=f"pass a smaller window (window={min(fits, window):,} fits beside the shard), lower "
                 "segment_tokens or segments_per_shard, store a smaller dtype, record fewer hooks, or keep only "
                 "reductions (raw=False)")
    tokenizer = model.tokenizer.to_dict() if hasattr(model.tokenizer, "to_dict") else None
    from workbench.analysis.lens.logit_lens import model_name

    description = {"name": model_name(model), "family": str(getattr(model.cfg, "family", "")),
                   "fingerprint": model_fingerprint(model), "dtype": str(next(model.parameters()).dtype)}
    return RecordPlan(
        description, documents, shapes, plan_segments(documents, segment_tokens, segments_per_shard),
        segment_tokens, segments_per_shard, dtype, raw, chosen, topk,
        (float(histogram[0]), float(histogram[1]), int(histogram[2])), int(window), path, unknown, tokenizer,
    )
