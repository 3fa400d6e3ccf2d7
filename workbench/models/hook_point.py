"""Hook points whose temporary hooks belong to one call, so concurrent calls on one model stay apart.

TransformerLens registers every hook on the module itself (torch's forward hooks), so the hooks that
`run_with_hooks` and `run_with_cache` attach in one thread fire in another thread's forward pass on
the same model: caches fill with the other thread's activations and edits leak. Here the hooks of a
`hooks()` block (which `run_with_hooks` and `run_with_cache` open) live in a `HookScope` held in a
context variable. Each thread (and each asyncio task) sees its own scopes and the model-wide hooks
(`add_hook`), never another call's. Backward hooks are bound to the tensors of the forward pass that
saw them, so a backward pass run later, or on autograd's own threads, still reaches them.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import partial
from typing import Literal

from torch import Tensor
from torch.utils.hooks import RemovableHandle

from workbench.models.hook_checks import check_hook_result
from workbench.models.transformer_lens_compat import HookPoint, LensHandle

__all__ = ["HookScope", "ScopedHookPoint", "current_scope", "hook_scope", "last_run_notes"]

Direction = Literal["fwd", "bwd"]


class HookScope:
    """The temporary hooks of one `hooks()` block, per hook point, on top of the enclosing block's."""

    def __init__(self, parent: HookScope | None):
        self.parent = parent
        self._own: dict[tuple[int, Direction], list[LensHandle]] = {}
        self._points: list[ScopedHookPoint] = []  # keeps the keys' objects alive while the scope is

    def add(self, point: ScopedHookPoint, hook: Callable, dir: Direction) -> LensHandle:
        """Attach `hook` to `point` for this scope only."""
        handle = LensHandle(_detached_handle(), is_permanent=False, context_level=None, user_hook=hook)
        self._own.setdefault((id(point), dir), []).append(handle)
        self._points.append(point)
        return handle

    def handles(self, point: ScopedHookPoint, dir: Direction) -> list[LensHandle]:
        """The hooks this scope and its enclosing ones hold on `point`, outermost first."""
        inherited = self.parent.handles(point, dir) if self.parent is not None else []
        own = self._own.get((id(point), dir))
        return [*inherited, *own] if own else inherited


_SCOPE: ContextVar[HookScope | None] = ContextVar("workbench_hook_scope", default=None)


def current_scope() -> HookScope | None:
    """The innermost `hooks()` block open in this thread or task, if any."""
    return _SCOPE.get()


@contextlib.contextmanager
def hook_scope() -> Iterator[HookScope]:
    """Open a scope for one call's hooks; they vanish when it closes, and no other thread sees them."""
    scope = HookScope(_SCOPE.get())
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def _detached_handle() -> RemovableHandle:
    """A handle for `LensHandle` that is not a torch hook: removing it removes nothing."""
    return RemovableHandle(OrderedDict())


def _matches(handle: LensHandle, including_permanent: bool, level: int | None) -> bool:
    """Whether `remove_hooks(including_permanent, level)` removes `handle` (TransformerLens's rule)."""
    if handle.is_permanent and not including_permanent:
        return False
    return level is None or handle.context_level == level


class ScopedHookPoint(HookPoint):
    """A `HookPoint` that calls its hooks itself: the model-wide ones (`add_hook`, kept on the point)
    and then those of the calling thread's open scopes, in the order they were added."""

    def __init__(self) -> None:
        super().__init__()  # assigns fwd_hooks / bwd_hooks = [], which set the model-wide lists

    # TransformerLens and workbench.models.recurrence read these lists to see which hooks are attached
    @property
    def fwd_hooks(self) -> list[LensHandle]:
        scope = _SCOPE.get()
        return self._model_fwd if scope is None else [*self._model_fwd, *scope.handles(self, "fwd")]

    @fwd_hooks.setter
    def fwd_hooks(self, handles: list[LensHandle]) -> None:
        self._model_fwd = list(handles)

    @property
    def bwd_hooks(self) -> list[LensHandle]:
        scope = _SCOPE.get()
        return self._model_bwd if scope is None else [*self._model_bwd, *scope.handles(self, "bwd")]

    @bwd_hooks.setter
    def bwd_hooks(self, handles: list[LensHandle]) -> None:
        self._model_bwd = list(handles)

    def add_hook(
        self, hook: Callable, dir: Direction = "fwd", is_permanent: bool = False, level: int | None = None,
        prepend: bool = False, alias_names: list[str] | None = None,
    ) -> LensHandle:
        """A model-wide hook, as TransformerLens's `add_hook` (every thread's forward calls it)."""
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        if alias_names is not None:
            raise ValueError("alias_names is not supported by workbench hook points")
        handles = self._model_fwd if dir == "fwd" else self._model_bwd
        handle = LensHandle(_detached_handle(), is_permanent, level, user_hook=hook)
        handles.insert(0, handle) if prepend else handles.append(handle)
        return handle

    def remove_hooks(
        self, dir: Literal["fwd", "bwd", "both"] = "fwd", including_permanent: bool = False,
        level: int | None = None,
    ) -> None:
        """Remove model-wide hooks, as TransformerLens does; a scope's hooks go when the scope closes."""
        if dir not in ("fwd", "bwd", "both"):
            raise ValueError(f"Invalid direction {dir}")
        if dir in ("fwd", "both"):
            self._model_fwd = [h for h in self._model_fwd if not _matches(h, including_permanent, level)]
        if dir in ("bwd", "both"):
            self._model_bwd = [h for h in self._model_bwd if not _matches(h, including_permanent, level)]

    def forward(self, x: Tensor) -> Tensor:
        """Every forward hook on `x` in turn, each on the previous one's result; then, when backward
        hooks are attached and `x` carries a gradient, they are bound to this output."""
        for handle in self.fwd_hooks:
            result = check_hook_result(handle.user_hook(x, hook=self), x, self.name, handle.user_hook)
            if result is not None:
                x = result
        backward = [h.user_hook for h in self.bwd_hooks]
        if backward and isinstance(x, Tensor) and x.requires_grad:
            x = x.view_as(x)  # a node of its own: its gradient is the one through this hook point only
            x.register_hook(partial(_call_backward_hooks, backward, self))
        return x


def _call_backward_hooks(hooks: list[Callable], point: ScopedHookPoint, grad: Tensor) -> Tensor:
    """The backward hooks on the gradient at the hook point's output, each on the previous result."""
    for hook in hooks:
        result = hook(grad, hook=point)
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]
        result = check_hook_result(result, grad, f"{point.name} (backward)", hook)
        if result is not None:
            grad = result
    return grad


class _LastRun(threading.local):
    """Per thread: what each mixer noted about its last forward pass in this thread."""

    def __init__(self) -> None:
        self.notes: weakref.WeakKeyDictionary[object, dict[str, object]] = weakref.WeakKeyDictionary()


_last_run = _LastRun()


def last_run_notes(owner: object) -> dict[str, object]:
    """The notes `owner` (a mixer) made in this thread's last forward pass: its kernel, its gradient
    route. Per thread, so `cache.metadata` describes the call that made the cache."""
    notes = _last_run.notes.get(owner)
    if notes is None:
        notes = _last_run.notes[owner] = {}
    return notes
