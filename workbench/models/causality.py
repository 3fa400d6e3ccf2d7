"""`check_causal=True`: probe each Python hook for causality before a hooked run, and say what leaked.

The hook contract asks hooks on per-position tensors to be causal: their output at position t may
depend on their input at positions <= t only (a recurrent replay calls them again at every later
step; a non-causal hook, e.g. `x + x.flip(1)`, gives numbers the contract does not promise). The
probe records the input each hook would see, calls the hook on it, then perturbs one input position
s at a time and looks for changes in the output at positions before s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.errors import NonCausalHookError
from workbench.models.hook_checks import hook_label
from workbench.models.recurrence import forward_hooks, is_read_only

if TYPE_CHECKING:
    from workbench.models.hooked import HookedRecurrentBase

__all__ = ["MAX_PROBED_POSITIONS", "check_hooks_causal", "leaked_positions"]

MAX_PROBED_POSITIONS = 64  # longer inputs are probed at this many positions, spread evenly, the last included


def _probe_positions(length: int) -> list[int]:
    """Input positions to perturb: every one but the first (nothing lies before it) up to the cap."""
    if length <= MAX_PROBED_POSITIONS + 1:
        return list(range(1, length))
    step = (length - 1) / MAX_PROBED_POSITIONS
    return sorted({length - 1 - round(i * step) for i in range(MAX_PROBED_POSITIONS)} - {0})


def _differs(a: Tensor, b: Tensor) -> Tensor:
    """Per position (axis 1), whether any element differs (NaN equal to NaN): [pos] bools."""
    changed = (a != b) & ~(torch.isnan(a) & torch.isnan(b))
    return changed.reshape(changed.shape[0], changed.shape[1], -1).any(-1).any(0)


def _call(fn: Callable, tensor: Tensor, point: Any) -> Tensor:
    """The hook's output on a copy of `tensor` (the copy itself when it edits in place or returns None)."""
    given = tensor.clone()
    result = fn(given, hook=point)
    return (result if isinstance(result, Tensor) else given).detach()


def leaked_positions(fn: Callable, tensor: Tensor, point: Any) -> dict[int, list[int]]:
    """For a hook `fn` on `tensor` [batch, pos, ...]: input position s -> the earlier output positions
    that changed when only s was perturbed (empty when the hook is causal on this input)."""
    with torch.no_grad():
        base = _call(fn, tensor, point)
        generator = torch.Generator(device="cpu").manual_seed(0)
        finite = tensor[torch.isfinite(tensor)]
        scale = float(finite.abs().mean()) + 1.0 if finite.numel() else 1.0
        leaks: dict[int, list[int]] = {}
        for s in _probe_positions(tensor.shape[1]):
            moved = tensor.clone()
            noise = torch.randn(moved[:, s].shape, generator=generator, dtype=torch.float64)
            moved[:, s] += (scale * noise).to(moved.dtype).to(moved.device)
            changed = _differs(base[:, :s], _call(fn, moved, point)[:, :s]).nonzero().flatten().tolist()
            if changed:
                leaks[s] = changed
    return leaks


def _python_hooks(model: HookedRecurrentBase, extra: Sequence[tuple[Any, Callable]]) -> list[tuple[str, Callable]]:
    """(hook name, function) for every editing Python hook of the run: those attached to the model or
    an open `hooks()` block, and `extra`; declarative `Edit`s (causal by construction) and read-only
    hooks (their output is dropped) are left out."""
    found: list[tuple[str, Callable]] = []
    for name, point in model.hook_dict.items():
        found += [(name, fn) for fn in forward_hooks(point)]
    for selector, fn in extra:
        names = [selector] if isinstance(selector, str) else [n for n in model.hook_dict if selector(n)]
        found += [(name, fn) for name in names]
    seen: set[tuple[str, int]] = set()
    unique = []
    for name, fn in found:
        if is_read_only(fn) or getattr(fn, "edit_positions", None) is not None or (name, id(fn)) in seen:
            continue
        seen.add((name, id(fn)))
        unique.append((name, fn))
    return unique


def check_hooks_causal(
    model: HookedRecurrentBase, fwd_hooks: Sequence[tuple[Any, Callable]], inputs: Any,
    model_kwargs: Mapping[str, Any],
) -> None:
    """Raise `NonCausalHookError` when a hook of this run (see `_python_hooks`) on a per-position tensor
    changes an output position on a change of a later input position, naming hook, point and positions.

    The probe records what each hook sees in a run with the hooks attached, then calls each hook once
    per probed position (at most `MAX_PROBED_POSITIONS`), so hooks with side effects see extra calls.
    """
    hooks = _python_hooks(model, fwd_hooks)
    specs = model.hook_specs()
    hooks = [(name, fn) for name, fn in hooks if "pos" in specs[name][0]]
    if not hooks:
        return
    names = sorted({name for name, _ in hooks})
    kwargs = {k: v for k, v in model_kwargs.items() if k not in ("return_type", "return_state")}
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        _, seen = model.run_with_cache(inputs, names_filter=names, **kwargs)
    problems = []
    for name, fn in hooks:
        tensor = seen[name]
        if not tensor.is_floating_point():
            continue
        leaks = leaked_positions(fn, tensor, model.hook_dict[name])
        if leaks:
            outputs = sorted({t for ts in leaks.values() for t in ts})
            s, ts = next(iter(sorted(leaks.items())))
            problems.append(
                f"hook {hook_label(fn)!r} on {name!r}: its output at position(s) {_listing(outputs)} changed "
                f"when only later input positions changed (e.g. input position {s} changed output "
                f"position(s) {_listing(ts)})"
            )
    if problems:
        raise NonCausalHookError(
            "check_causal=True: " + "; ".join(problems) + ". Hooks on per-position tensors must be causal "
            "(the output at t may depend on inputs at positions <= t only); for a per-position edit use "
            "workbench.models.position_wise or Edit"
        )


def _listing(positions: Sequence[int], shown: int = 12) -> str:
    """`[0, 1, 2, ...]` with at most `shown` entries."""
    head = ", ".join(map(str, positions[:shown]))
    return f"[{head}{', ...' if len(positions) > shown else ''}]"
