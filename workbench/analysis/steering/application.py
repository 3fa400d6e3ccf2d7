"""Adding `multiplier × vector` during a forward pass or generation (Rimsky et al. 2024, section 3:
the vector is added at every position after the prompt), on the residual stream or injected once
into the recurrent state and carried by the recurrence (Paulo, Marshall & Belrose 2024, section 4).

Positions are absolute: a `PositionClock` on `hook_embed` (which fires once per forward call) knows
where each call starts, so the same `Steer` acts at the same tokens whether the sequence runs in one
pass or one token at a time during generation. Every hook is causal and pure, as the recurrence's
replay requires (see `workbench.models.recurrence`), so both paths give the same steered logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.analysis.steering.vectors import SteeringVector, hook_layer, hook_shape
from workbench.models.transformer_lens_compat import HookPoint
from workbench.utils import in_layer

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "PositionClock",
    "Positions",
    "Steer",
    "SteeringHook",
    "generate_steered",
    "run_steered",
    "steering",
]

# "all" | "prompt" | "generated" | absolute index (negative: from the end of the prompt)
# | slice (e.g. slice(t, None): every position from t) | list of indices
Positions = str | int | slice | Sequence[int]
_NAMED = ("all", "prompt", "generated")


class PositionClock:
    """Tracks the absolute position of each forward call's first token (hook on `hook_embed`).

    `reset()` starts a new sequence; the first call after it sets `prompt_length`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = 0  # absolute index of the current call's first position
        self.next = 0
        self.prompt_length: int | None = None

    def __call__(self, embedded: Tensor, hook: HookPoint) -> None:
        length = embedded.shape[1]  # [batch, pos, d_model]
        self.start = self.next
        self.next += length
        if self.prompt_length is None:
            self.prompt_length = length


def _absolute(index: int, prompt_length: int) -> int:
    return index if index >= 0 else prompt_length + index


def position_mask(positions: Positions, start: int, length: int, prompt_length: int) -> Tensor:
    """[length] bool: which of the absolute positions start..start+length-1 `positions` selects."""
    absolute = torch.arange(start, start + length)  # [length]
    if isinstance(positions, str):
        if positions == "all":
            return torch.ones(length, dtype=torch.bool)
        if positions == "prompt":
            return absolute < prompt_length
        if positions == "generated":
            return absolute >= prompt_length
        raise ValueError(f"unknown positions {positions!r}; use {_NAMED}, an int, a slice or a list")
    if isinstance(positions, bool):
        raise TypeError("positions must be a name, an int, a slice or a list of ints, not a bool")
    if isinstance(positions, int):
        return absolute == _absolute(positions, prompt_length)
    if isinstance(positions, slice):
        first = 0 if positions.start is None else _absolute(positions.start, prompt_length)
        stop = None if positions.stop is None else _absolute(positions.stop, prompt_length)
        step = positions.step or 1
        if step <= 0:
            raise ValueError(f"a positions slice needs a positive step, got {step}")
        mask = (absolute >= first) & ((absolute - first) % step == 0)
        return mask if stop is None else mask & (absolute < stop)
    chosen = [_absolute(int(p), prompt_length) for p in positions]
    return torch.isin(absolute, torch.tensor(chosen, dtype=torch.long))


@dataclass
class Steer:
    """One addition: `multiplier × vector` at `positions` of the vector's hook (or of the same hook
    in each of `layers`). `relative=True` reads the multiplier in units of the hook's typical
    activation norm (the vector is rescaled to that norm first), so hooks compare at equal norm.

    `positions=t` on a state hook injects once at t and lets the recurrence carry it;
    `positions="all"` adds at every position, as Rimsky et al. 2024 do on the residual stream.
    """

    vector: SteeringVector
    multiplier: float = 1.0
    positions: Positions = "all"
    layers: Sequence[int] | None = None
    relative: bool = False

    def delta(self) -> Tensor:
        """The tensor added at each chosen position, [*shape]."""
        v = self.vector.vector
        if self.relative:
            v = v * (self.vector.reference_norm / max(float(v.norm()), 1e-30))
        return self.multiplier * v

    def hook_names(self) -> list[str]:
        """The hooks this addition acts on."""
        if self.layers is None:
            return [self.vector.hook]
        layer = hook_layer(self.vector.hook)
        if layer is None:
            raise ValueError(f"layers= needs a per-block hook; {self.vector.hook!r} is not one")
        return [in_layer(self.vector.hook, lay) for lay in self.layers]


class SteeringHook:
    """Adds `delta` at the chosen absolute positions; pure and causal (safe under replay)."""

    def __init__(self, delta: Tensor, positions: Positions, clock: PositionClock):
        self.delta, self.positions, self.clock = delta, positions, clock
        position_mask(positions, 0, 1, 1)  # check the spec now, not inside a forward pass

    def __call__(self, x: Tensor, hook: HookPoint) -> Tensor:
        prompt_length = self.clock.prompt_length or x.shape[1]
        mask = position_mask(self.positions, self.clock.start, x.shape[1], prompt_length)  # [pos]
        if not bool(mask.any()):
            return x
        index = mask.nonzero().squeeze(1).to(x.device)
        out = x.clone()  # [batch, pos, *shape]
        out[:, index] = out[:, index] + self.delta.to(device=x.device, dtype=x.dtype)
        return out

    def __repr__(self) -> str:
        return f"SteeringHook(|delta|={float(self.delta.norm()):.3g}, positions={self.positions!r})"


def _as_list(steers: Steer | Sequence[Steer]) -> list[Steer]:
    items = [steers] if isinstance(steers, Steer) else list(steers)
    for s in items:
        if not isinstance(s, Steer):
            raise TypeError(f"expected Steer(...) objects, got {type(s).__name__}")
    return items


def steering_hooks(
    model: HookedModel, steers: Steer | Sequence[Steer], clock: PositionClock, allow_other_model: bool = False
) -> list[tuple[str, Any]]:
    """(hook name, hook) pairs for `steers`, the clock first; checks names, shapes and the model."""
    hooks: list[tuple[str, Any]] = [("hook_embed", clock)]
    checked: set[int] = set()
    for steer in _as_list(steers):
        if id(steer.vector) not in checked:
            steer.vector.check_model(model, allow_other_model)
            checked.add(id(steer.vector))
        delta = steer.delta()
        for name in steer.hook_names():
            model.check_hook_name(name)
            expected = hook_shape(model, name)
            if tuple(delta.shape) != expected:
                raise ValueError(
                    f"the steering vector has shape {tuple(delta.shape)} but {name} holds "
                    f"{expected} per position"
                )
            hooks.append((name, SteeringHook(delta, steer.positions, clock)))
    return hooks


@contextmanager
def steering(
    model: HookedModel, steers: Steer | Sequence[Steer], allow_other_model: bool = False
) -> Iterator[PositionClock]:
    """Within the block every forward call of `model` is steered. The block starts one sequence:
    later calls continue its positions (as generation's steps do); `clock.reset()` starts anew."""
    clock = PositionClock()
    with model.hooks(fwd_hooks=steering_hooks(model, steers, clock, allow_other_model)):
        yield clock


def run_steered(
    model: HookedModel,
    inputs: Any,
    steers: Steer | Sequence[Steer],
    *,
    allow_other_model: bool = False,
    **forward_kwargs: Any,
) -> Any:
    """`model(inputs, **forward_kwargs)` with the additions in place (logits [batch, pos, d_vocab])."""
    with steering(model, steers, allow_other_model):
        return model(inputs, **forward_kwargs)


@torch.no_grad()
def generate_steered(
    model: HookedModel,
    prompt: str | Tensor,
    steers: Steer | Sequence[Steer],
    max_new_tokens: int = 100,
    *,
    greedy: bool = False,
    seed: int | None = 0,
    temperature: float = 1.0,
    path: str | None = None,
    allow_other_model: bool = False,
) -> str | Tensor:
    """`model.generate` with the additions at absolute positions: the prompt runs once, then each
    new token steps the carried state, and a `Steer` at position t acts once, at t."""
    with steering(model, steers, allow_other_model):
        return model.generate(prompt, max_new_tokens, temperature=temperature, greedy=greedy,
                              seed=seed, path=path)
