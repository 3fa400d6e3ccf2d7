"""Record per-unit activations of a hooked recurrent model over a text, chunk by chunk.

Every cell analysis (Karpathy, Johnson & Fei-Fei 2015, *Visualizing and Understanding Recurrent
Networks*) starts here: one character per token, so position t of every array is character t of
the text, and the value at t is the quantity after the model has read characters 0..t.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from workbench.analysis.tokens import tokenize
from workbench.errors import MemoryBudgetError, UnknownHookError
from workbench.utils import block_name, get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "GATES",
    "CellRecording",
    "hook_name",
    "mixer_quantities",
    "next_char_probs",
    "record",
    "resolve_layers",
    "resolve_quantities",
]

# The sigmoid gates of each family, whose values lie in [0, 1] (paper, section 4.2).
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "o"),
    "gru": ("r", "z"),
    "mingru": ("z",),
    "minlstm": ("f", "i"),
    "elman": (),
    "s6": (),
}

DEFAULT_CHUNK = 2048  # positions per forward pass; the state is carried across chunks exactly


def hook_name(layer: int, quantity: str) -> str:
    """The hook of `quantity` in layer `layer`: `blocks.{layer}.mixer.hook_{quantity}`."""
    return get_act_name(quantity, layer, "mixer")


def mixer_quantities(model: HookedModel) -> tuple[str, ...]:
    """The per-position quantities the model's mixers hook (the same in every layer)."""
    return tuple(model.blocks[0].mixer.quantities)


def resolve_layers(model: HookedModel, layers: int | Sequence[int] | None) -> list[int]:
    """Layer indices to analyse (negative counts from the end); out-of-range layers raise.

    The default is every recurrent layer: all blocks, or `model.recurrent_layers` where a model mixes
    recurrent and attention blocks (Griffin), whose attention blocks have no cell quantities.
    """
    n = len(model.blocks)
    if layers is None:
        return list(getattr(model, "recurrent_layers", range(n)))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise ValueError("no layers given")
    out = []
    for layer in chosen:
        if not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
            raise UnknownHookError(
                block_name(layer),
                message=f"unknown layer {layer!r}: the model has {n} layer(s), 0..{n - 1}",
            )
        out.append(int(layer) % n)
    return out


def resolve_quantities(model: HookedModel, quantities: str | Sequence[str] | None) -> list[str]:
    """Quantity names to record; a name the mixer does not hook raises with suggestions."""
    known = mixer_quantities(model)
    if quantities is None:
        return [q for q in known if q != "out"]
    chosen = [quantities] if isinstance(quantities, str) else list(quantities)
    if not chosen:
        raise ValueError("no quantities given")
    for q in chosen:
        if q not in known:
            close = difflib.get_close_matches(q, known, n=2, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownHookError(
                q,
                message=(
                    f"unknown quantity {q!r} for a {model.cfg.family} mixer; it hooks "
                    f"{', '.join(known)}{hint}"
                ),
            )
    return chosen


@dataclass
class CellRecording:
    """Activations of chosen quantities over one text: `values[(layer, quantity)]` is [pos, units].

    S6's `[pos, d_inner, d_state]` state is flattened to units `d * d_state + n`.
    """

    text: str
    tokens: np.ndarray  # [pos] int64
    values: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # each [pos, units]
    family: str = ""

    def __len__(self) -> int:
        return len(self.text)

    def get(self, layer: int, quantity: str) -> np.ndarray:
        """[pos, units] for one layer and quantity; a pair that was not recorded raises."""
        try:
            return self.values[(layer, quantity)]
        except KeyError:
            recorded = ", ".join(f"layer {lay} {q!r}" for lay, q in self.values)
            raise UnknownHookError(
                hook_name(layer, quantity),
                message=f"layer {layer} quantity {quantity!r} was not recorded; have {recorded}",
            ) from None

    def unit(self, layer: int, quantity: str, unit: int) -> np.ndarray:
        """[pos] activation of one unit; an out-of-range unit raises."""
        block = self.get(layer, quantity)
        if not 0 <= unit < block.shape[1]:
            raise IndexError(
                f"unit {unit} out of range: layer {layer} {quantity!r} has {block.shape[1]} units"
            )
        return block[:, unit]

    @property
    def keys(self) -> list[tuple[int, str]]:
        return list(self.values)

    def slice(self, start: int, stop: int) -> CellRecording:
        """The recording of text[start:stop] (activations still carry the context before start)."""
        return CellRecording(
            self.text[start:stop],
            self.tokens[start:stop],
            {k: v[start:stop] for k, v in self.values.items()},
            self.family,
        )


@torch.no_grad()
def _run_chunks(
    model: HookedModel, tokens: Tensor, names: list[str], chunk: int, budget: int | None, progress: bool = False
) -> tuple[dict[str, np.ndarray], list[Tensor]]:
    """Run tokens [pos] through the model in chunks, carrying the state; returns hook -> array."""
    from tqdm.auto import tqdm

    pieces: dict[str, list[np.ndarray]] = {n: [] for n in names}
    logits: list[Tensor] = []
    state = None
    bar = tqdm(total=tokens.shape[0], desc="recording", unit="char", unit_scale=True, disable=not progress)
    for start in range(0, tokens.shape[0], chunk):
        part = tokens[start : start + chunk][None].to(model.device)  # [1, chunk]
        (out, state), cache = model.run_with_cache(
            part, names_filter=names, initial_state=state, return_state=True,
            memory_budget_bytes=budget,
        )
        logits.append(out[0].float().cpu())  # [chunk, d_vocab]
        for n in names:
            t = cache[n][0].float().cpu()  # [chunk, units, ...]
            pieces[n].append(t.reshape(t.shape[0], -1).numpy())
        bar.update(part.shape[1])
    bar.close()
    return {n: np.concatenate(p) for n, p in pieces.items()}, logits


def _check_budget(model: HookedModel, pos: int, names: list[str], budget: int | None) -> None:
    """Refuse before running when the whole recording (kept as float32) would exceed the budget."""
    from workbench.models.cache import memory_budget

    needed = model.recording_bytes(1, pos, names) * 4 // next(model.parameters()).element_size()
    limit = budget if budget is not None else memory_budget(model.device)
    if needed > limit:
        raise MemoryBudgetError(
            needed, limit, what=f"recording {len(names)} quantities over {pos} characters",
            hint="use a shorter text, fewer layers or quantities, or raise memory_budget_bytes; or record "
                 "to disk with workbench.record(model, corpus_files, out_dir, hooks=[...]) and discover cells "
                 "from the store (workbench.analysis.cells.discover_cells_from_store)",
        )


def record(
    model: HookedModel,
    text: str,
    quantities: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    *,
    tokenizer: Any = None,
    chunk: int = DEFAULT_CHUNK,
    memory_budget_bytes: int | None = None,
    progress: bool = False,
) -> CellRecording:
    """Record `quantities` (default: every mixer quantity but `out`) of `layers` over `text`.

    Checks the size of the whole recording against the memory budget before running anything,
    then runs chunk by chunk with the recurrent state carried, so long texts give the same numbers
    as one pass (`progress`: a tqdm bar over the characters).
    """
    tokens = tokenize(model, text, tokenizer)  # [pos]
    layer_list = resolve_layers(model, layers)
    qs = resolve_quantities(model, quantities)
    names = [hook_name(layer, q) for layer in layer_list for q in qs]
    _check_budget(model, tokens.shape[0], names, memory_budget_bytes)
    arrays, _ = _run_chunks(model, tokens, names, chunk, memory_budget_bytes, progress)
    values = {(layer, q): arrays[hook_name(layer, q)] for layer in layer_list for q in qs}
    return CellRecording(text, tokens.numpy(), values, model.cfg.family)


@torch.no_grad()
def next_char_probs(
    model: HookedModel, text: str, *, tokenizer: Any = None, chunk: int = DEFAULT_CHUNK
) -> np.ndarray:
    """[pos, d_vocab] softmax of the model's logits: row t predicts character t + 1 (paper 4.3)."""
    tokens = tokenize(model, text, tokenizer)
    _, logits = _run_chunks(model, tokens, [], chunk, None)
    return torch.cat(logits).softmax(-1).numpy()
