"""Declarative edits: `Edit(hook, positions, op, value, batch)` objects, applied in linear time.

An `Edit` is a position-wise hook that declares the positions it changes, so `run_recurrence` makes
them segment boundaries of the fast scan (kernel up to the edit, one readable step there, kernel on
from the edited state) instead of replaying step by step. Pass them as
`model.run_with_edits(tokens, edits=[...])` or `model.run_with_hooks(tokens, edits=[...])`; an
`Edit` is also an ordinary hook function, `fwd_hooks=[(edit.hook, edit)]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from workbench.errors import UnknownHookError
from workbench.models.transformer_lens_compat import HookPoint

__all__ = ["Edit", "EditError", "UnknownEditHookError", "resolve_edits"]

EditOp = Literal["set", "add", "scale", "zero", "mean"]
EDIT_OPS: tuple[str, ...] = ("set", "add", "scale", "zero", "mean")
Positions = int | slice | Sequence[int]


class EditError(ValueError):
    """An edit that cannot apply: bad op, position out of range, value of the wrong shape."""


class UnknownEditHookError(UnknownHookError, ValueError):
    """An edit naming a hook the model does not have (a `ValueError` and an `UnknownHookError`)."""


@dataclass(eq=False)
class Edit:
    """Change hook `hook`'s value at `positions` (int, slice or list) in batch rows `batch` (all if
    None): op "set" (to value), "add" (value), "scale" (by value), "zero", or "mean" (to value, e.g. a
    dataset mean, else the mean over the batch at that position). value: a float, or a tensor that
    broadcasts to `[rows, positions, ...]` (e.g. `[d_hidden]`, or `[rows, positions, d_hidden]`)."""

    hook: str
    positions: Positions
    op: EditOp = "set"
    value: Tensor | float | None = None
    batch: int | Sequence[int] | None = None
    _resolved: tuple[int, ...] | None = field(default=None, init=False, repr=False)

    workbench_position_wise = True  # a position-wise hook (`recurrence.is_position_wise`)

    def __post_init__(self) -> None:
        if self.op not in EDIT_OPS:
            raise EditError(f"edit op {self.op!r} is not one of {EDIT_OPS}")
        if self.op in ("set", "add", "scale") and self.value is None:
            raise EditError(f"edit op {self.op!r} on {self.hook!r} needs a value")
        if isinstance(self.positions, int) and self.positions >= 0:
            self._resolved = (self.positions,)
        elif not isinstance(self.positions, slice) and not isinstance(self.positions, int):
            listed = tuple(int(p) for p in self.positions)
            if not listed:
                raise EditError(f"edit on {self.hook!r} names no positions")
            if len(set(listed)) < len(listed):
                raise EditError(f"edit on {self.hook!r} names a position twice: {list(listed)}")
            if all(p >= 0 for p in listed):
                self._resolved = listed  # in the given order: a value's position axis follows it

    @property
    def edit_positions(self) -> tuple[int, ...] | None:
        """The absolute positions changed, once known (negative indices and slices need a length)."""
        return self._resolved

    def resolved(self, length: int) -> Edit:
        """This edit with its positions made absolute for a sequence of `length` (in the given order);
        out of range raises."""
        if isinstance(self.positions, slice):
            listed = tuple(range(length)[self.positions])
            if not listed:
                raise EditError(f"edit on {self.hook!r}: slice {self.positions} selects no position of {length}")
        else:
            listed = (self.positions,) if isinstance(self.positions, int) else tuple(self.positions)
            bad = [p for p in listed if not -length <= p < length]
            if bad:
                raise EditError(
                    f"edit on {self.hook!r}: position(s) {bad} out of range for a sequence of {length}"
                )
            listed = tuple(p % length for p in listed)
        edit = Edit(self.hook, list(listed), self.op, self.value, self.batch)
        return edit

    def rows(self, batch: int) -> list[int]:
        """The batch rows edited, checked against `batch` rows."""
        if self.batch is None:
            return list(range(batch))
        listed = [self.batch] if isinstance(self.batch, int) else list(self.batch)
        bad = [r for r in listed if not -batch <= r < batch]
        if bad:
            raise EditError(f"edit on {self.hook!r}: batch row(s) {bad} out of range for a batch of {batch}")
        return [r % batch for r in listed]

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise `EditError` unless this edit applies to a hooked tensor of `shape` [batch, pos, ...]."""
        if len(shape) < 2:
            raise EditError(f"edit on {self.hook!r}: the hook's tensor {tuple(shape)} has no position axis")
        positions = self.resolved(shape[1]).edit_positions or ()
        self._value_for(shape, len(self.rows(shape[0])), len(positions), torch.float32, torch.device("cpu"),
                        check_only=True)

    def _value_for(
        self, shape: Sequence[int], n_rows: int, n_positions: int, dtype: torch.dtype, device: torch.device,
        check_only: bool = False,
    ) -> Tensor | None:
        """The value broadcast to [n_rows, n_positions, *features]; wrong shapes raise `EditError`."""
        if self.value is None:
            return None
        target = (n_rows, n_positions, *shape[2:])
        value = torch.as_tensor(self.value)
        try:
            if torch.broadcast_shapes(tuple(value.shape), target) != target:
                raise RuntimeError
        except RuntimeError:
            raise EditError(
                f"edit on {self.hook!r}: value of shape {tuple(value.shape)} does not broadcast to "
                f"[rows, positions, ...] = {target}"
            ) from None
        return None if check_only else value.to(device=device, dtype=dtype).expand(target)

    def call_at(self, tensor: Tensor, hook: HookPoint | None, pos: range) -> Tensor | None:
        """Apply the edit to `tensor` [batch, len(pos), ...] holding absolute positions `pos`; None
        when no edited position lies in `pos`."""
        if self._resolved is None and pos.start != 0:
            raise EditError(f"edit on {self.hook!r}: negative positions and slices need the sequence length; "
                            "pass the edit through run_with_edits / run_with_hooks(edits=...)")
        positions = self._resolved if self._resolved is not None else self.resolved(pos.stop).edit_positions
        assert positions is not None
        columns = [i for i, p in enumerate(positions) if pos.start <= p < pos.stop]  # indices into positions
        if not columns:
            return None
        rows = self.rows(tensor.shape[0])
        full = self._value_for((tensor.shape[0], max(positions) + 1, *tensor.shape[2:]), len(rows),
                               len(positions), tensor.dtype, tensor.device)
        row_index = torch.tensor(rows, device=tensor.device)[:, None]  # [rows, 1]
        pos_index = torch.tensor([positions[i] - pos.start for i in columns], device=tensor.device)[None, :]
        current = tensor[row_index, pos_index]  # [rows, cols, ...]
        value = None if full is None else full[:, columns]  # [rows, cols, ...]
        if self.op == "set" or (self.op == "mean" and value is not None):
            new = value.expand_as(current)
        elif self.op == "add":
            new = current + value
        elif self.op == "scale":
            new = current * value
        elif self.op == "zero":
            new = torch.zeros_like(current)
        else:  # mean over the whole batch at each position
            new = tensor[:, pos_index[0]].mean(0, keepdim=True).expand_as(current)
        out = tensor.clone()
        out[row_index, pos_index] = new
        return out

    def __call__(self, tensor: Tensor, hook: HookPoint | None = None) -> Tensor | None:
        return self.call_at(tensor, hook, range(tensor.shape[1]))


def resolve_edits(model: object, edits: Sequence[Edit], batch: int, length: int) -> list[Edit]:
    """`edits` checked against `model`'s hooks and shapes (`EditError` / `UnknownEditHookError`,
    both ValueErrors) and resolved to absolute positions for `batch` x `length` inputs."""
    specs = model.hook_specs()  # type: ignore[attr-defined]
    sizes = model.dimension_sizes(batch, length)  # type: ignore[attr-defined]
    resolved = []
    for edit in edits:
        if not isinstance(edit, Edit):
            raise EditError(f"edits must be Edit objects, got {type(edit).__name__}")
        if edit.hook not in specs:
            raise UnknownEditHookError(edit.hook, list(specs))
        dims = specs[edit.hook][0]
        if len(dims) < 2 or dims[1] != "pos":
            raise EditError(f"edit on {edit.hook!r}: its tensor {list(dims)} has no position axis; "
                            "use a Python hook for initial states")
        edit.check_shape([sizes[d] for d in dims])
        resolved.append(edit.resolved(length))
    return resolved
