"""Run a recurrence under hooks: a fast first pass, hooks on whole tensors, causal replay after an edit.

Every recurrent quantity (a gate, a state) is hooked once per forward call with its full
`[batch, pos, ...]` tensor, on both paths. Reading is free: caching hooks see the tensor the fast
first pass produced. Editing is causal: when a hook changes a quantity, the recurrence is replayed
step by step from the first changed position, and at every later step each hook is called again on
the full-length tensor (positions after the current one hold the first-pass values) and its value at
the current position is used. The result is the fixed point a per-step loop would give, so a hook
that edits position t changes every later position and no earlier one, identically on both paths.
Hook functions on recurrent quantities must therefore be causal (their output at t depends only on
positions <= t) and free of side effects other than recording.

Which hooks are replayed is decided by an explicit mark: a hook wrapped by `read_only` (as the
cache's `ActivationRecorder`s are) never edits, so it is not called per replayed step but once with
the fixed point; any unmarked hook may edit and is replayed. That general replay costs O(L²) per
edit (the hook sees the whole tensor at every later step).

Edits in linear time: when every editing hook of a mixer is marked `position_wise` (its output at t
depends only on its input at t, and t) or is a declarative `Edit` (`workbench.models.edits`), the
edits become segment boundaries of the scan (`_run_segmented`): the fast kernel runs up to an edited
position, the readable step recomputes that position with the hooks applied to its `[batch, 1, ...]`
view, and the fast kernel continues from the state after it. Edits at known positions (`Edit`) cost
about one pass; position-wise Python hooks find their edited positions by calling the hook on
windows of kernel output that double in length while nothing changes, which is linear too.

Gradients: a hook on a recurrent quantity X also gets, when it has a backward hook (`incl_bwd=True`,
`bwd_hooks=`) and autograd is on, dL/dX_t, the derivative of the loss with respect to X's value at t
carried through every later step. The first pass then runs without autograd (any fast kernel); the
hook point is called on a tensor that requires grad, and a differentiable pass of the readable step
loop adds its (zero-valued) difference from itself to X at every step, X_t' = X_t + probe_t. The
probe's gradient, which is dL/dX_t, is therefore the gradient at the hook point's output, and the
backward hooks receive it. The differentiable pass's values are the ones used downstream. A mixer
with a written-out backward (an `Adjoint`, e.g. the LSTM's, `workbench.kernels.lstm_adjoint`)
replaces that pass when no hook edits: the first pass's values carry a graph whose backward computes
every quantity's adjoint directly, and the probes receive them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.models.hook_checks import check_hook_result
from workbench.models.transformer_lens_compat import HookPoint

State = dict[str, Tensor]
Emit = Callable[[str, Tensor], Tensor]
# (inputs at one position [batch, ...], state before it, emit) -> state after it
StepFn = Callable[[Mapping[str, Tensor], State, Emit], State]
# the fused path's first pass: (quantities wanted) -> (values [batch, pos, ...] per quantity, final state)
FirstPassFn = Callable[[set[str]], tuple[dict[str, Tensor], State]]
# (values, t) -> state after position t, read off the recorded quantities
StateAtFn = Callable[[Mapping[str, Tensor], int], State]
# the fused path's first pass over positions [start, stop) from a given state: (wanted, start, stop,
# state before start) -> (values [batch, stop - start, ...] per quantity, state after stop - 1)
SegmentPassFn = Callable[[set[str], int, int, State], tuple[dict[str, Tensor], State]]
# (first-pass values, inputs, initial state, probes by quantity) -> (values the caller needs, with a
# graph, and the final state): a mixer's differentiable pass with a written-out backward
AdjointFn = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], State, Mapping[str, Tensor]],
                     tuple[dict[str, Tensor], State]]


@dataclass(frozen=True)
class Adjoint:
    """A mixer's written-out backward: the quantities its `run` needs from the first pass, the ones it
    returns with a graph (a superset of the caller's `needed`), and a note for the cache's metadata."""

    quantities: tuple[str, ...]
    returns: tuple[str, ...]
    run: AdjointFn
    route: str


class ReadOnlyHook:
    """A hook marked read-only: it records but never edits, so causal replay need not call it per
    step (it is called once more with the fixed point instead). Wrap any hook function with
    `read_only(fn)`; its return value is dropped, so the mark cannot hide an edit."""

    workbench_read_only = True  # the mark `is_read_only` checks

    def __init__(self, fn: Callable[..., object] | None = None):
        self.fn = fn

    def __call__(self, tensor: Tensor, hook: HookPoint) -> None:
        if self.fn is not None:
            self.fn(tensor, hook=hook)

    def __repr__(self) -> str:
        return f"read_only({self.fn!r})"


def read_only(fn: Callable[..., object]) -> ReadOnlyHook:
    """`fn` marked read-only, for `add_hook` / `hooks()` / `run_with_hooks`:
    `model.add_hook(name, read_only(fn))`. Unmarked hooks are treated as possibly editing."""
    return fn if isinstance(fn, ReadOnlyHook) else ReadOnlyHook(fn)


def is_read_only(fn: object) -> bool:
    """True for a hook carrying the read-only mark (a `ReadOnlyHook`, e.g. the cache's recorders)."""
    return getattr(fn, "workbench_read_only", False) is True


class PositionWiseHook:
    """A hook marked position-wise: its output at position t depends only on its input at t and on t,
    so edits cost linear time (see the module notes). Built by `position_wise(fn)`."""

    workbench_position_wise = True  # the mark `is_position_wise` checks
    edit_positions: tuple[int, ...] | None = None  # the only positions it may change, when known

    def __init__(self, fn: Callable[..., Tensor | None]):
        self.fn = fn

    def call_at(self, tensor: Tensor, hook: HookPoint, pos: range) -> Tensor | None:
        """The hook on `tensor` [batch, len(pos), ...], which holds the absolute positions `pos`."""
        return self.fn(tensor, hook=hook, pos=pos)

    def __call__(self, tensor: Tensor, hook: HookPoint) -> Tensor | None:
        return self.call_at(tensor, hook, range(tensor.shape[1]))

    def __repr__(self) -> str:
        return f"position_wise({self.fn!r})"


def position_wise(fn: Callable[..., Tensor | None]) -> PositionWiseHook:
    """`fn(tensor, hook, pos)` marked position-wise, for `add_hook` / `hooks()` / `run_with_hooks`:
    `pos` is the range of absolute positions on the tensor's axis 1 (it may be a window or one step);
    `fn`'s output at each position must depend only on its input there and on the position."""
    return fn if isinstance(fn, PositionWiseHook) else PositionWiseHook(fn)


def is_position_wise(fn: object) -> bool:
    """True for a hook carrying the position-wise mark (`position_wise`, or a declarative `Edit`)."""
    return getattr(fn, "workbench_position_wise", False) is True


class ActivationRecorder(ReadOnlyHook):
    """A read-only hook that stores a detached copy of each activation it sees in `store`."""

    def __init__(self, store: dict[str, Tensor], device: torch.device | str | None = None):
        super().__init__()
        self.store = store
        self.device = device

    def __call__(self, tensor: Tensor, hook: HookPoint) -> None:
        saved = tensor.detach()
        self.store[hook.name] = saved.to(self.device) if self.device is not None else saved

    def __repr__(self) -> str:
        return "ActivationRecorder(read-only)"


def record_every_hook(module: torch.nn.Module, store: dict[str, Tensor]) -> dict[str, Tensor]:
    """Attach an `ActivationRecorder` writing into `store` to every `hook_*` point of a bare mixer
    (outside a hooked model, whose setup would name them), named by its path in `module`."""
    for name, child in module.named_modules():
        if name.startswith("hook_"):
            child.name = name
            child.add_hook(ActivationRecorder(store))
    return store


def forward_hooks(hook_point: HookPoint) -> list[Callable[..., Tensor | None]]:
    """The hook functions attached to `hook_point` (TransformerLens's `add_hook`, `hooks()`,
    `run_with_hooks`), in the order they run, as the user gave them."""
    return [handle.user_hook for handle in hook_point.fwd_hooks if handle.user_hook is not None]


def hook_is_active(hook_point: HookPoint) -> bool:
    """True when any forward hook is attached to `hook_point`."""
    return len(hook_point.fwd_hooks) > 0


def hook_may_edit(hook_point: HookPoint) -> bool:
    """True unless every attached forward hook carries the read-only mark (`read_only`)."""
    return any(not is_read_only(fn) for fn in forward_hooks(hook_point))


def hook_wants_gradient(hook_point: HookPoint) -> bool:
    """True when autograd is on and a backward hook is attached to `hook_point` (`incl_bwd=True`,
    `bwd_hooks=`): its gradient must then reach the hook point's output."""
    return torch.is_grad_enabled() and len(hook_point.bwd_hooks) > 0


def gradient_probe(value: Tensor) -> Tensor:
    """`value` plus a zero that requires grad: the same numbers, now differentiable, so a hook point
    called on it delivers the gradient at its output to its backward hooks."""
    zero = torch.zeros((), dtype=value.dtype, device=value.device, requires_grad=True)
    return value + zero


GRADIENT_ROUTE = "reference step loop with additive probes (autograd)"


class _Routes(threading.local):
    """Per thread, the stack of gradient-route notes of the mixers running (see `gradient_route`)."""

    def __init__(self) -> None:
        self.stack: list[list[str]] = []


_routes = _Routes()


class gradient_route:
    """Context manager collecting how the gradients of a mixer's recurrent quantities were computed
    (`run_recurrence` notes it); `.value` is the note, or None when no recurrent hook wanted one."""

    def __enter__(self) -> gradient_route:
        self.notes: list[str] = []
        _routes.stack.append(self.notes)
        return self

    def __exit__(self, *exc: object) -> None:
        _routes.stack.pop()

    @property
    def value(self) -> str | None:
        return "; ".join(dict.fromkeys(self.notes)) or None


def _note_route(route: str) -> None:
    if _routes.stack:
        _routes.stack[-1].append(route)


def call_hooks(hook_point: HookPoint, tensor: Tensor, marked: bool) -> Tensor:
    """Call only the editing hooks (marked=False) or only the ones marked read-only of `hook_point`,
    in order, each on the previous one's result."""
    for fn in forward_hooks(hook_point):
        if is_read_only(fn) != marked:
            continue
        result = check_hook_result(fn(tensor, hook=hook_point), tensor, hook_point.name, fn)
        if result is not None:
            tensor = result
    return tensor


def first_changed_position(before: Tensor, after: Tensor) -> int:
    """Index of the first position (axis 1) where `after` differs from `before`; pos if none."""
    if after.shape != before.shape:
        raise ValueError(
            f"a hook returned shape {tuple(after.shape)} for a tensor of shape "
            f"{tuple(before.shape)}; hooks must keep the shape"
        )
    changed = (before != after) & ~(torch.isnan(before) & torch.isnan(after))
    per_position = changed.reshape(changed.shape[0], changed.shape[1], -1).any(-1).any(0)  # [pos]
    hits = per_position.nonzero()
    return int(hits[0]) if len(hits) else before.shape[1]


class LazyInputs(Mapping[str, Tensor]):
    """Step inputs built only if a step loop reads them: `run_recurrence` with a fused kernel that
    does not need them (e.g. one that projects its inputs itself) then never builds them, unless an
    editing hook forces a replay. factories: name -> () -> [batch, pos, ...]; length: pos;
    at (optional): name -> (t) -> [batch, ...], one position alone, for the few readable steps of a
    segmented edit (`column`), so the whole tensor is not built for them."""

    def __init__(self, factories: Mapping[str, Callable[[], Tensor]], length: int,
                 at: Mapping[str, Callable[[int], Tensor]] | None = None):
        self.factories, self.length, self._built = dict(factories), length, {}
        self.at = dict(at or {})

    def column(self, name: str, position: int) -> Tensor:
        """Input `name` at one position [batch, ...]: from the built tensor if there is one."""
        if name in self._built or name not in self.at:
            return self[name][:, position]
        return self.at[name](position)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._built:
            self._built[name] = self.factories[name]()
        return self._built[name]

    def __iter__(self):
        return iter(self.factories)

    def __len__(self) -> int:
        return len(self.factories)


def step_inputs(inputs: Mapping[str, Tensor], position: int) -> dict[str, Tensor]:
    """Every step input at one position [batch, ...], without building lazy ones that can give it."""
    if isinstance(inputs, LazyInputs):
        return {name: inputs.column(name, position) for name in inputs}
    return {name: value[:, position] for name, value in inputs.items()}


def _length(inputs: Mapping[str, Tensor]) -> int:
    """Positions of the step inputs (without building lazy ones)."""
    return inputs.length if isinstance(inputs, LazyInputs) else next(iter(inputs.values())).shape[1]


def run_reference_loop(
    step: StepFn, inputs: Mapping[str, Tensor], state: State, wanted: set[str], length: int
) -> tuple[dict[str, Tensor], State]:
    """Plain step-by-step recurrence recording the `wanted` quantities, [batch, pos, ...] each."""
    records: dict[str, list[Tensor]] = {}

    def record(name: str, value: Tensor) -> Tensor:
        if name in wanted:
            records.setdefault(name, []).append(value)
        return value

    for t in range(length):
        state = step({k: v[:, t] for k, v in inputs.items()}, state, record)
    return {k: torch.stack(v, dim=1) for k, v in records.items()}, state


def run_recurrence(
    step: StepFn,
    inputs: Mapping[str, Tensor],
    initial_state: State,
    hook_points: Mapping[str, HookPoint],
    state_at: StateAtFn,
    state_quantities: Sequence[str],
    needed: Sequence[str] = (),
    first_pass: FirstPassFn | None = None,
    segment_pass: SegmentPassFn | None = None,
    adjoint: Adjoint | None = None,
) -> tuple[dict[str, Tensor], State]:
    """Compute every quantity of a recurrence over all positions, firing hooks causally.

    `hook_points` maps each recurrent quantity, in step order, to its hook point. `needed` names
    the quantities the caller uses afterwards. `first_pass`, when given (the fused path), computes
    the first pass with a fast kernel; otherwise the readable loop `step` does. `segment_pass`, when
    given (the fused path), runs the fast kernel on a range of positions from a given state, so that
    position-wise edits cost linear time; without it their segments run the readable loop. `adjoint`,
    when given, is the mixer's written-out backward for gradients under hooks that do not edit.
    Returns values and the final state.
    """
    length = _length(inputs)
    active = {q for q, hp in hook_points.items() if hook_is_active(hp)}
    editing = {q for q in active if hook_may_edit(hook_points[q])}
    wanted = set(needed) | active | (set(state_quantities) if editing else set())
    gradients = {q for q, hp in hook_points.items() if hook_wants_gradient(hp)}
    if gradients:
        usable = adjoint is not None and set(needed) <= set(adjoint.returns)
        return _run_with_gradients(step, inputs, initial_state, hook_points, wanted | gradients, needed,
                                   first_pass, active, editing, gradients, adjoint if usable else None)
    if editing and all(_position_wise_only(hook_points[q]) for q in editing):
        if segment_pass is None or first_pass is None:
            segment_pass = _loop_segments(step, inputs, initial_state, first_pass, length)
        return _run_segmented(step, inputs, initial_state, hook_points, state_at, state_quantities,
                              needed, segment_pass, active, editing)

    if first_pass is not None:
        values, final_state = first_pass(wanted)
    else:
        values, final_state = run_reference_loop(step, inputs, initial_state, wanted, length)

    first_edit = length
    for name, hook_point in hook_points.items():
        if name not in active:
            continue
        before = values[name].clone() if name in editing else values[name]
        values[name] = hook_point(values[name])
        if name in editing:
            first_edit = min(first_edit, first_changed_position(before, values[name]))
    if first_edit == length:
        return values, final_state
    return _replay_from(step, inputs, initial_state, hook_points, state_at, values, first_edit,
                        active, editing)


def _replay_from(
    step: StepFn,
    inputs: Mapping[str, Tensor],
    initial_state: State,
    hook_points: Mapping[str, HookPoint],
    state_at: StateAtFn,
    values: dict[str, Tensor],
    start: int,
    active: set[str],
    editing: set[str],
) -> tuple[dict[str, Tensor], State]:
    """Re-run positions start.. step by step; editing hooks see the full-length tensor at each step.

    Recorders are not called during the replay: once it ends, each is called a last time with the
    fixed point (every position as the edited recurrence produced it), so a cache holds exactly
    the values the model used, each edit applied once.
    """
    buffers = {k: v.clone() for k, v in values.items()}  # [batch, pos, ...] each
    state = initial_state if start == 0 else state_at(values, start - 1)
    length = _length(inputs)
    position = start

    def emit(name: str, value: Tensor) -> Tensor:
        if name not in buffers:
            return value
        buffer = buffers[name]
        buffer[:, position] = value
        if name in editing:
            value = call_hooks(hook_points[name], buffer.clone(), marked=False)[:, position]
            buffer[:, position] = value
        return value

    for position in range(start, length):
        state = step({k: v[:, position] for k, v in inputs.items()}, state, emit)
    for name in active:
        call_hooks(hook_points[name], buffers[name], marked=True)
    return buffers, state


def _run_with_gradients(
    step: StepFn,
    inputs: Mapping[str, Tensor],
    initial_state: State,
    hook_points: Mapping[str, HookPoint],
    wanted: set[str],
    needed: Sequence[str],
    first_pass: FirstPassFn | None,
    active: set[str],
    editing: set[str],
    gradients: set[str],
    adjoint: Adjoint | None = None,
) -> tuple[dict[str, Tensor], State]:
    """`run_recurrence` when the quantities `gradients` have backward hooks (see the module notes).

    1. The first pass, without autograd (the fast kernel on the fused path), gives every value.
    2. Hooks fire once on the full tensors as usual; a quantity in `gradients` is passed as a tensor
       that requires grad (`gradient_probe`), so its hook point's output is differentiable.
    3. The step loop runs again from position 0 with autograd, adding to each such quantity at each
       step its hooked tensor minus that tensor detached (zero, but carrying the gradient back to the
       hook point); editing hooks act from the first edited position on, as in the replay. Its values
       and final state are what the caller uses, so the loss depends on the quantities through it.
       With an `adjoint` and no edit, its graph over the first pass's values takes the loop's place.
    """
    length = _length(inputs)
    if adjoint is not None:
        wanted = wanted | set(adjoint.quantities)
    # per position: unbind (whose backward stacks once) rather than one select per step; built before
    # the no-grad first pass, which would otherwise build lazy inputs without autograd
    columns = {name: inputs[name].unbind(1) for name in inputs}
    with torch.no_grad():
        if first_pass is not None:
            values, _ = first_pass(wanted)
        else:
            values, _ = run_reference_loop(step, inputs, initial_state, wanted, length)

    first_edit = length
    hooked: dict[str, Tensor] = {}
    for name, hook_point in hook_points.items():
        if name not in active and name not in gradients:
            continue
        value = gradient_probe(values[name]) if name in gradients else values[name]
        before = value.detach().clone() if name in editing else None
        hooked[name] = hook_point(value)
        if before is not None:
            first_edit = min(first_edit, first_changed_position(before, hooked[name]))
    if adjoint is not None and first_edit == length:
        _note_route(adjoint.route)
        probes = {name: hooked[name] for name in gradients}
        returned, state = adjoint.run(values, inputs, initial_state, probes)
        result = {name: value.detach() for name, value in hooked.items()}
        result.update({name: returned[name] for name in needed})
        return result, state
    _note_route(GRADIENT_ROUTE)
    del values  # the first pass's own tensors: what the hooks saw lives on in `hooked`

    # per quantity and position, the hooked value and the same value detached: their difference is the
    # zero probe, formed per step so that no third full-length tensor is held
    probes = {name: (hooked[name].unbind(1), hooked[name].detach().unbind(1)) for name in gradients}
    edits = editing if first_edit < length else set()
    recorded = set(needed) | edits | (active if edits else set())
    records: dict[str, list[Tensor]] = {name: [] for name in recorded}
    position = 0

    def emit(name: str, value: Tensor) -> Tensor:
        if name in edits and position >= first_edit:
            # the full-length tensor the hook sees: this pass's values so far, then the first pass's
            done = torch.stack([*records[name], value], dim=1)
            full = torch.cat([done, hooked[name].detach()[:, position + 1:]], dim=1)
            value = call_hooks(hook_points[name], full, marked=False)[:, position]
        if name in probes:
            live, dead = probes[name]
            value = value + (live[position] - dead[position])
        if name in records:
            records[name].append(value)
        return value

    state = initial_state
    for position in range(length):
        state = step({name: column[position] for name, column in columns.items()}, state, emit)
    result = {name: value.detach() for name, value in hooked.items()}
    result.update({name: torch.stack(values, dim=1) for name, values in records.items()})
    if edits:
        for name in active:
            call_hooks(hook_points[name], result[name].detach(), marked=True)
    return result, state


def _position_wise_only(hook_point: HookPoint) -> bool:
    """True when every editing (unmarked) hook of `hook_point` is position-wise."""
    return all(is_position_wise(fn) for fn in forward_hooks(hook_point) if not is_read_only(fn))


def _loop_segments(
    step: StepFn, inputs: Mapping[str, Tensor], initial_state: State, first_pass: FirstPassFn | None,
    length: int,
) -> SegmentPassFn:
    """A `SegmentPassFn` from the readable loop (the whole range from the initial state through
    `first_pass` when there is one): segments for mixers without a ranged fast kernel."""

    def segment(wanted: set[str], start: int, stop: int, state: State) -> tuple[dict[str, Tensor], State]:
        if first_pass is not None and start == 0 and stop == length and state is initial_state:
            return first_pass(wanted)
        window = {name: inputs[name][:, start:stop] for name in inputs}  # [batch, stop - start, ...]
        return run_reference_loop(step, window, state, wanted, stop - start)

    return segment


def _call_position_wise(hook_point: HookPoint, tensor: Tensor, pos: range) -> Tensor:
    """The editing hooks of `hook_point` (all position-wise) on `tensor` [batch, len(pos), ...]."""
    for fn in forward_hooks(hook_point):
        if is_read_only(fn):
            continue
        result = check_hook_result(fn.call_at(tensor, hook_point, pos), tensor, hook_point.name, fn)
        if result is not None:
            tensor = result
    return tensor


def _known_positions(hook_points: Mapping[str, HookPoint], editing: set[str]) -> list[int] | None:
    """Sorted positions every editing hook declares it may change (declarative `Edit`s), or None
    when some hook does not declare them (a `position_wise` Python hook)."""
    positions: set[int] = set()
    for name in editing:
        for fn in forward_hooks(hook_points[name]):
            if is_read_only(fn):
                continue
            declared = getattr(fn, "edit_positions", None)
            if declared is None:
                return None
            positions.update(declared)
    return sorted(positions)


def _run_segmented(
    step: StepFn,
    inputs: Mapping[str, Tensor],
    initial_state: State,
    hook_points: Mapping[str, HookPoint],
    state_at: StateAtFn,
    state_quantities: Sequence[str],
    needed: Sequence[str],
    segment_pass: SegmentPassFn,
    active: set[str],
    editing: set[str],
) -> tuple[dict[str, Tensor], State]:
    """`run_recurrence` when every editing hook is position-wise: edits as segment boundaries.

    The fast kernel (`segment_pass`) runs over the positions no hook changes; at a position some hook
    changes, the readable step recomputes it with the hooks applied to each quantity's
    `[batch, 1, ...]` view, and the kernel continues from the state after it. Positions are known in
    advance for declarative edits; otherwise the hooks are called on windows of kernel output, each
    accepted up to its first changed position, and a window doubles while nothing changes. Read-only
    hooks are called once at the end with the result, as after a replay. Same numbers as the replay.
    """
    length = _length(inputs)
    recorded = {q for q in active if any(is_read_only(fn) for fn in forward_hooks(hook_points[q]))}
    known = _known_positions(hook_points, editing)
    if known is not None:
        stops = [p for p in known if 0 <= p < length]
        wanted = set(needed) | recorded  # the kernel's own final state carries each segment on
    else:
        wanted = set(needed) | active | set(state_quantities)
    pieces: dict[str, list[Tensor]] = {name: [] for name in wanted}  # [batch, k, ...] each
    state = initial_state

    def run_step(position: int, state: State) -> State:
        """The readable step at `position`, every editing hook applied to its one-position view."""

        def emit(name: str, value: Tensor) -> Tensor:
            if name in editing:
                value = _call_position_wise(hook_points[name], value.unsqueeze(1), range(position, position + 1))[:, 0]
            if name in pieces:
                pieces[name].append(value.unsqueeze(1))
            return value

        return step(step_inputs(inputs, position), state, emit)

    def keep(values: Mapping[str, Tensor], count: int | None = None) -> None:
        for name in pieces:
            pieces[name].append(values[name] if count is None else values[name][:, :count])

    if known is not None:
        position = 0
        for stop in [*stops, length]:
            if stop > position:
                values, state = segment_pass(wanted, position, stop, state)
                keep(values)
            if stop < length:
                state = run_step(stop, state)
            position = stop + 1
    else:
        position, window = 0, length
        while position < length:
            stop = min(length, position + window)
            values, final = segment_pass(wanted, position, stop, state)
            accepted = stop - position
            for name in hook_points:
                if name in editing:
                    after = _call_position_wise(hook_points[name], values[name].clone(), range(position, stop))
                    accepted = min(accepted, first_changed_position(values[name], after))
            if accepted == stop - position:  # nothing changed: the hooked window is the kernel's
                keep(values)
                state, position, window = final, stop, window * 2
                continue
            if accepted > 0:
                keep(values, accepted)
                state = state_at(values, accepted - 1)
            position += accepted
            state = run_step(position, state)
            position, window = position + 1, max(1, 2 * accepted)

    result = {name: torch.cat(parts, dim=1) for name, parts in pieces.items() if parts}
    for name in active:
        if name in result:
            call_hooks(hook_points[name], result[name], marked=True)
    return result, state
