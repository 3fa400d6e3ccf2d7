"""Clean/corrupted pairs for patching: equal-shape token tensors, plus hooks that make a run corrupted
without changing its tokens (Gaussian noise on the embeddings, as in ROME's causal tracing, Meng et
al. 2022, section 2.1).

A run is its tokens and the hooks that define it. Every hook here is batch-tiled: a run repeated
k times (row r is pair r % n) gets the same noise in every copy, so a batched sweep sees exactly the
run a single call sees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.errors import EmptyInputError
from workbench.models.transformer_lens_compat import HookPoint
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["EmbeddingNoise", "HookFn", "Hooks", "Pair", "check_pair", "noise_pair", "substitute_tokens", "tile_rows"]

HookFn = Callable[[Tensor, HookPoint], Tensor | None]
Hooks = tuple[tuple[str, HookFn], ...]  # (hook name, function) pairs, as `run_with_hooks` takes them


def tile_rows(reference: Tensor, batch: int) -> Tensor:
    """`reference` [n, ...] repeated to [batch, ...] so that row r is reference[r % n]; batch must be a
    multiple of n (a sweep repeats its n pairs once per patched cell)."""
    n = reference.shape[0]
    if batch == n:
        return reference
    if batch % n:
        raise ValueError(f"a batch of {batch} rows is not a whole number of copies of {n} pair(s)")
    return reference.repeat(batch // n, *([1] * (reference.dim() - 1)))


@dataclass(frozen=True)
class Pair:
    """A clean and a corrupted run: tokens [batch, pos] of equal shape (row i of each is pair i) and the
    hooks each run adds (e.g. `EmbeddingNoise` on `hook_embed` for the corrupted side)."""

    clean: Tensor  # [batch, pos]
    corrupted: Tensor  # [batch, pos]
    clean_hooks: Hooks = ()
    corrupted_hooks: Hooks = ()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.clean.shape)  # type: ignore[return-value]

    def run(self, side: str) -> tuple[Tensor, Hooks]:
        """(tokens, hooks) of the "clean" or "corrupted" side."""
        if side == "clean":
            return self.clean, self.clean_hooks
        if side == "corrupted":
            return self.corrupted, self.corrupted_hooks
        raise ValueError(f"unknown side {side!r}; use 'clean' or 'corrupted'")


def as_batch(tokens: Tensor | Sequence[int], what: str) -> Tensor:
    """ids [pos] or [batch, pos] -> [batch, pos] (long)."""
    t = tokens if isinstance(tokens, Tensor) else torch.as_tensor(tokens)
    if t.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
        raise TypeError(f"{what} must hold integer token ids, got dtype {t.dtype}")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"{what} must be token ids [batch, pos] or [pos], got shape {list(t.shape)}")
    if t.numel() == 0:
        raise EmptyInputError(f"{what} is empty: give at least one token")
    return t.long()


def check_pair(model: HookedModel, pair: Pair) -> Pair:
    """The pair with both sides as [batch, pos] ids on the model's device; mismatched shapes and ids
    outside the vocabulary raise a ValueError naming the shapes."""
    clean = as_batch(pair.clean, "the clean tokens")
    corrupted = as_batch(pair.corrupted, "the corrupted tokens")
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean tokens {list(clean.shape)} and corrupted tokens {list(corrupted.shape)} differ in "
            "shape: patching needs pairs of equal length (pad or trim them to one [batch, pos])"
        )
    vocab = int(model.cfg.d_vocab)
    for what, t in (("clean", clean), ("corrupted", corrupted)):
        if int(t.min()) < 0 or int(t.max()) >= vocab:
            raise ValueError(f"the {what} tokens hold ids outside the vocabulary 0..{vocab - 1}")
    device = model.device
    return Pair(clean.to(device), corrupted.to(device), tuple(pair.clean_hooks), tuple(pair.corrupted_hooks))


def substitute_tokens(
    tokens: Tensor | Sequence[int], substitutions: Mapping[int, int]
) -> Tensor:
    """A corrupted copy of `tokens` ([batch, pos] or [pos]): position -> new id, in every row.

    >>> substitute_tokens(torch.tensor([5, 6, 7]), {1: 0, -1: 2}).tolist()
    [[5, 0, 2]]
    """
    t = as_batch(tokens, "tokens").clone()
    length = t.shape[1]
    if not substitutions:
        raise ValueError("no substitutions given: map at least one position to a token id")
    for position, token in substitutions.items():
        if not -length <= int(position) < length:
            raise IndexError(f"position {position} is out of range for {length} token(s)")
        t[:, int(position)] = int(token)
    return t


class EmbeddingNoise:
    """Adds fixed Gaussian noise [n, pos, d_model] to `hook_embed` at chosen positions (ROME's causal
    tracing); batch-tiled, pure and causal, so it is safe in any sweep."""

    def __init__(self, noise: Tensor):
        self.noise = noise  # [n, pos, d_model], zero where nothing is corrupted

    def __call__(self, embedded: Tensor, hook: HookPoint) -> Tensor:
        noise = tile_rows(self.noise.to(device=embedded.device, dtype=embedded.dtype), embedded.shape[0])
        return embedded + noise[:, : embedded.shape[1]]

    def from_position(self, start: int) -> EmbeddingNoise:
        """The same noise for a run that resumes at position `start` (a sweep skipping what no patch
        reaches); a run's hook without this method makes the sweep rerun from position 0."""
        return EmbeddingNoise(self.noise[:, start:])

    def __repr__(self) -> str:
        return f"EmbeddingNoise(shape={list(self.noise.shape)}, std={float(self.noise.std()):.3g})"


def noise_pair(
    model: HookedModel,
    tokens: Tensor | Sequence[int],
    positions: Sequence[int] | None = None,
    scale: float = 3.0,
    std: float | None = None,
    seed: int = 0,
) -> Pair:
    """A pair whose corrupted side is the clean tokens with seeded Gaussian noise of standard deviation
    `scale × std` added to the embeddings at `positions` (all by default); `std` defaults to the
    standard deviation of the clean embeddings (ROME uses 3× the embeddings' std)."""
    clean = as_batch(tokens, "tokens").to(model.device)
    batch, length = clean.shape
    chosen = list(range(length)) if positions is None else [int(p) for p in positions]
    for p in chosen:
        if not -length <= p < length:
            raise IndexError(f"position {p} is out of range for {length} token(s)")
    embed = get_act_name("embed")
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=embed)
    embedded = cache[embed]  # [n, pos, d_model]
    std = float(embedded.std()) if std is None else float(std)
    d_model = embedded.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, length, d_model, generator=generator, dtype=torch.float64)  # [n, pos, d]
    mask = torch.zeros(length, dtype=torch.bool)
    mask[chosen] = True
    noise = noise * (scale * std) * mask[None, :, None]
    return Pair(clean, clean.clone(), corrupted_hooks=((embed, EmbeddingNoise(noise.to(embedded.dtype))),))
