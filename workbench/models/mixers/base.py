"""The common frame of every mixer: hook points per quantity, the initial state as a hooked input."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from workbench.models.config import RecurrentConfig
from workbench.models.hook_point import ScopedHookPoint, last_run_notes
from workbench.models.paths import ExecutionPath, check_path
from workbench.models.recurrence import State, gradient_probe, gradient_route, hook_wants_gradient
from workbench.models.specs import HookSpec
from workbench.models.transformer_lens_compat import HookPoint

__all__ = ["HookSpec", "Mixer", "dimension_sizes"]


class Mixer(nn.Module):
    """A sequence mixer: `[batch, pos, d_model]` in, `[batch, pos, d_model]` out, state carried.

    Subclasses set `quantities` (hooked per position, `[batch, pos, ...]`, in computation order),
    `state_names` (the recurrent state, hooked as `hook_initial_{name}`, `[batch, ...]`) and
    implement `forward_reference` / `forward_fused` (native mixers) or `mix` (adapters, which take
    a padding mask). `cfg` sizes the dimensions (`dimension_sizes`); adapters, which size theirs from
    the wrapped model, pass None and override `dimension_sizes`.
    """

    quantities: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()

    def __init__(self, cfg: RecurrentConfig | None):
        super().__init__()
        self.cfg = cfg
        for name in self.quantities:
            setattr(self, f"hook_{name}", ScopedHookPoint())
        for name in self.state_names:
            setattr(self, f"hook_initial_{name}", ScopedHookPoint())

    # What the last forward pass noted, per thread (`last_run_notes`), so that concurrent calls on one
    # model each describe their own run in `cache.metadata`.
    @property
    def last_kernel(self) -> str:
        """The kernel this mixer's last forward pass in this thread ran."""
        return str(last_run_notes(self).get("kernel", "none"))

    @last_kernel.setter
    def last_kernel(self, name: str) -> None:
        last_run_notes(self)["kernel"] = name

    @property
    def last_gradient_route(self) -> str | None:
        """How the last forward in this thread computed the gradients of its recurrent quantities
        (None: plain autograd through the kernels that ran, or no gradient wanted)."""
        route = last_run_notes(self).get("gradient_route")
        return None if route is None else str(route)

    @last_gradient_route.setter
    def last_gradient_route(self, route: str | None) -> None:
        last_run_notes(self)["gradient_route"] = route

    def hook_point(self, name: str) -> HookPoint:
        return getattr(self, f"hook_{name}")

    def hook_points(self, names: tuple[str, ...]) -> dict[str, HookPoint]:
        return {name: self.hook_point(name) for name in names}

    def hook_specs(self) -> dict[str, HookSpec]:
        """Per quantity: its dimension names and a one-line meaning (paper symbol first)."""
        raise NotImplementedError

    def state_specs(self) -> dict[str, HookSpec]:
        """Per state tensor: its dimension names (no pos axis) and meaning."""
        raise NotImplementedError

    def block_hook_specs(self) -> dict[str, HookSpec]:
        """Every hook of the mixer, named as its block sees it, in firing order: initial state first."""
        specs = {f"mixer.hook_initial_{name}": spec for name, spec in self.state_specs().items()}
        specs.update({f"mixer.hook_{name}": spec for name, spec in self.hook_specs().items()})
        return specs

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        """Size of every dimension name the specs use; adapters read theirs from the wrapped model."""
        return dimension_sizes(self.cfg, batch=batch, pos=pos)

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        sizes = self.dimension_sizes(batch=batch, pos=1)
        return {
            name: torch.zeros([sizes[d] for d in dims], device=device, dtype=dtype)
            for name, (dims, _) in self.state_specs().items()
        }

    def prepare_state(self, state: Mapping[str, Tensor] | None, x: Tensor) -> State:
        """Fill in a zero state where none is given, check shapes, and fire the initial-state hooks."""
        zeros = self.zero_state(x.shape[0], x.device, x.dtype)
        if state is None:
            state = zeros
        missing = set(self.state_names) - set(state)
        if missing:
            raise ValueError(f"initial state lacks {sorted(missing)}; expected {self.state_names}")
        prepared: State = {}
        for name in self.state_names:
            value = state[name]
            if value.shape != zeros[name].shape:
                raise ValueError(
                    f"initial state {name!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(zeros[name].shape)}"
                )
            hook_point = getattr(self, f"hook_initial_{name}")
            value = value.to(x.dtype)
            if hook_wants_gradient(hook_point) and not value.requires_grad:
                value = gradient_probe(value)  # so the backward hooks get dL/d(initial state)
            prepared[name] = hook_point(value)
        return prepared

    def forward(
        self, x: Tensor, state: Mapping[str, Tensor] | None = None, path: ExecutionPath = "fused",
        mask: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        """x: [batch, pos, d_model], mask: [batch, pos] (1 = token) or None
        -> (out [batch, pos, d_model], final state)."""
        path = check_path(path)
        initial = self.prepare_state(state, x)
        if path == "reference":
            self.last_kernel = "reference loop"
        with gradient_route() as route:
            result = self.mix(x, initial, fused=path == "fused", mask=mask)
        self.last_gradient_route = route.value
        return result

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        """One path from the prepared initial state. Native mixers read every position: no mask."""
        if mask is not None:
            raise ValueError(f"a {type(self).__name__} reads every position; it takes no padding mask")
        return self.forward_fused(x, state) if fused else self.forward_reference(x, state)

    def forward_reference(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError


def dimension_sizes(cfg: RecurrentConfig, batch: int, pos: int) -> dict[str, int]:
    """Concrete size of every named dimension used in hook specs."""
    return {
        "batch": batch,
        "pos": pos,
        "d_model": cfg.d_model,
        "d_hidden": cfg.d_hidden,
        "d_inner": cfg.d_hidden,
        "d_state": cfg.d_state,
        "d_conv-1": cfg.d_conv - 1,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "d_input": cfg.d_input,
        "d_output": cfg.d_output,
    }
