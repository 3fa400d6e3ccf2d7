"""The execution path a forward call takes: "reference" (the readable step loop) or "fused" (fast
kernels, same numbers). Defined once here and checked in one place, `check_path`."""

from __future__ import annotations

from typing import Literal, get_args

ExecutionPath = Literal["reference", "fused"]
PATHS: tuple[ExecutionPath, ...] = get_args(ExecutionPath)


def check_path(path: object) -> ExecutionPath:
    """`path` if it is an execution path, else a ValueError naming the allowed values."""
    if path not in PATHS:
        allowed = " or ".join(repr(p) for p in PATHS)
        raise ValueError(f"unknown path {path!r}; use {allowed}")
    return path  # type: ignore[return-value]


class DefaultPath:
    """A model's default execution path, used when a forward call passes `path=None`.

    Read it as `model.path`; change it only with `set_default_path` (it is checked there), so a
    model's state never holds an unchecked path. New models default to "fused".
    """

    _default_path: ExecutionPath = "fused"

    @property
    def path(self) -> ExecutionPath:
        """The default execution path ("reference" or "fused")."""
        return self._default_path

    def set_default_path(self, path: ExecutionPath) -> None:
        """Make `path` the default for forward calls that do not name one."""
        self._default_path = check_path(path)

    def resolve_path(self, path: ExecutionPath | None) -> ExecutionPath:
        """The path a call runs: `path` if given (checked), else the model's default."""
        return self._default_path if path is None else check_path(path)
