"""Checks on a user's `initial_state`, so a wrong one fails with what was expected and what was given.

Without them a bare tensor reported "has 1 layers", an extra key was ignored, integer states were
cast silently and a `meta` tensor failed with a different raw torch error on each path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from workbench.errors import InitialStateError

__all__ = ["check_initial_state"]

HINT = "model.initial_state(batch) gives one of the right form"


def _describe(value: object) -> str:
    """What was given, briefly: a tensor's shape and dtype, else the type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype} on {value.device}"
    return type(value).__name__


def check_initial_state(state: object, like: Sequence[Mapping[str, Tensor]],
                        device: torch.device | Sequence[torch.device]) -> None:
    """`state` must be None or a list with one dict per layer holding exactly the keys of `like[layer]`
    (the zero state, shapes for this batch, on any device), each a floating tensor of that shape on
    `device` (or on `device[layer]`, one per layer, for a model placed over several devices). Another
    floating dtype is accepted (cast, as a float64 state into a float32 model). An axis
    of length 0 in the zero state (a KV cache with nothing read yet) may have any length."""
    if state is None:
        return
    layers = len(like)
    keys = [list(layer) for layer in like]
    expected = f"expected a list of {layers} dicts, one per layer, with keys {keys[0] if layers else []}"
    if isinstance(state, (Tensor, str, bytes, Mapping)) or not isinstance(state, Sequence):
        raise InitialStateError(f"initial_state: {expected}; got {_describe(state)} ({HINT})")
    if len(state) != layers:
        raise InitialStateError(f"initial_state has {len(state)} entries; {expected} ({HINT})")
    for layer, (entry, zeros) in enumerate(zip(state, like, strict=True)):
        where = f"initial_state[{layer}]"
        if not isinstance(entry, Mapping):
            raise InitialStateError(f"{where}: expected a dict of tensors with keys {keys[layer]}; got "
                                    f"{_describe(entry)} ({HINT})")
        missing = [k for k in zeros if k not in entry]
        extra = [k for k in entry if k not in zeros]
        if missing or extra:
            parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown keys {extra}"] if extra else [])
            raise InitialStateError(f"{where} {' and '.join(parts)}; expected exactly the keys {keys[layer]} "
                                    f"({HINT})")
        on = device if isinstance(device, torch.device) else device[layer]
        for name, zero in zeros.items():
            _check_tensor(f"{where}[{name!r}]", entry[name], zero, on)


def _check_tensor(where: str, value: object, zero: Tensor, device: torch.device) -> None:
    """One state tensor: a floating tensor of `zero`'s shape on `device`."""
    if not isinstance(value, Tensor):
        raise InitialStateError(f"{where}: expected a tensor of shape {tuple(zero.shape)}; got {_describe(value)}")
    if not value.is_floating_point():
        raise InitialStateError(
            f"{where}: expected a floating-point tensor ({zero.dtype}); got dtype {value.dtype}, which would "
            f"be cast silently; convert it with .to({zero.dtype}) if that is meant"
        )
    if value.device != device:
        remedy = ("a meta tensor has no values" if value.device.type == "meta"
                  else f"move it with .to({str(device)!r})")
        raise InitialStateError(f"{where}: expected a tensor on the model's device {device}; got one on "
                                f"{value.device} ({remedy})")
    # an axis the zero state holds empty (an attention layer's KV cache, `past` = 0) may have any length
    same = value.dim() == zero.dim() and all(z in (0, v) for v, z in zip(value.shape, zero.shape, strict=True))
    if not same:
        shown = tuple("any" if z == 0 else z for z in zero.shape)
        raise InitialStateError(f"{where} has shape {tuple(value.shape)}, expected {shown} "
                                "(the input's batch size first)")
