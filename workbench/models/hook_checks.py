"""Checks on what users pass as hooks and what their hooks return, so mistakes fail at the hook.

Without them a hook that returns an int fails inside TransformerLens (`'int' object has no attribute
'shape'`) and one that returns a narrower tensor fails in the next LayerNorm, far from the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from workbench.errors import HookReturnError

__all__ = ["check_hook_pairs", "check_hook_result", "hook_label"]


def hook_label(fn: object) -> str:
    """A short name for a hook function in messages: its own name, or the wrapped one's."""
    inner = getattr(fn, "fn", None)
    target = inner if inner is not None else fn
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(target).__name__


def check_hook_pairs(pairs: Any, argument: str) -> list[tuple[Any, Callable]]:
    """`fwd_hooks` / `bwd_hooks` as a list of (name, function) pairs, or a `TypeError` naming the
    argument and what was given (a lone pair, a bare function, a non-callable hook)."""
    if pairs is None:
        return []
    if callable(pairs) or isinstance(pairs, (str, bytes)):
        raise TypeError(f"{argument} must be a list of (hook name, function) pairs, got {type(pairs).__name__} "
                        f"{_short(pairs)}")
    if (isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[0], str) and callable(pairs[1])):
        raise TypeError(f"{argument} must be a list of (hook name, function) pairs, got one pair "
                        f"{_short(pairs)}; wrap it in a list: {argument}=[(name, fn)]")
    if not isinstance(pairs, Iterable):
        raise TypeError(f"{argument} must be a list of (hook name, function) pairs, got {type(pairs).__name__}")
    checked = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{argument}[{index}] must be a (hook name, function) pair, got "
                            f"{type(pair).__name__} {_short(pair)}")
        name, fn = pair
        if not (isinstance(name, str) or callable(name)):
            raise TypeError(f"{argument}[{index}]: the hook name must be a string or a predicate on names, "
                            f"got {type(name).__name__} {_short(name)}")
        if not callable(fn):
            raise TypeError(f"{argument}[{index}]: the hook for {_short(name)} must be callable "
                            f"fn(tensor, hook), got {type(fn).__name__} {_short(fn)}")
        checked.append((name, fn))
    return checked


def check_hook_result(result: object, given: Tensor, point_name: str | None, fn: object) -> Tensor | None:
    """`result` when it is None or a tensor like `given` (same shape, dtype and device); otherwise a
    `HookReturnError` naming the hook, the hook point, what it returned and what was expected."""
    if result is None:
        return None
    where = f"hook {hook_label(fn)!r} on {point_name!r}"
    expected = (f"expected None (to keep the value) or a tensor of shape {tuple(given.shape)}, dtype "
                f"{given.dtype} on {given.device}, like its input")
    if not isinstance(result, Tensor):
        raise HookReturnError(f"{where} returned {type(result).__name__} {_short(result)}; {expected}")
    differences = [
        f"{what} {got}" for what, got, want in (
            ("shape", tuple(result.shape), tuple(given.shape)),
            ("dtype", result.dtype, given.dtype),
            ("device", result.device, given.device),
        ) if got != want
    ]
    if differences:
        raise HookReturnError(f"{where} returned a tensor with {', '.join(differences)}; {expected}")
    return result


def _short(value: object, width: int = 60) -> str:
    """repr(value), cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
