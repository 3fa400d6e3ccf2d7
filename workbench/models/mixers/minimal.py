"""minGRU and minLSTM (Feng et al. 2024, *Were RNNs All We Needed?*): gates from the input alone.

Gates and candidates depend only on x_t, so they are computed (and hooked) for all positions at
once; only h is recurrent. The fused path solves h_t = a_t ⊙ h_{t-1} + b_t with the log-space
parallel scan of Heinsen 2023 when every term is positive (the paper's log-space form), else with
the chunked linear scan. On CPU without gradients it runs compiled C++ (`kernels.cpu_compiled`): the
gates and the scan in one pass over memory when no hook may edit the gates, else the gates in
PyTorch (hooks fire and may edit them) followed by the compiled linear scan.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from workbench.kernels import g, linear_scan, log_space_scan
from workbench.kernels.buffers import buffered_linear
from workbench.kernels.cpu_compiled import (
    compiled_linear_scan,
    compiled_mingru_gates_scan,
    compiled_minlstm_gates_scan,
    use_compiled_kernels,
)
from workbench.kernels.dispatch import fastest_linear_scan, use_triton
from workbench.models.config import RecurrentConfig
from workbench.models.mixers.base import Mixer
from workbench.models.recurrence import Emit, LazyInputs, State, hook_may_edit, run_recurrence
from workbench.models.specs import B_HIDDEN, BP_HIDDEN, RESID, HookSpec


def _needs_grad(x: Tensor, module: nn.Module) -> bool:
    """Whether autograd must see the coefficient computation (then no in-place tricks)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _g_consuming(pre: Tensor) -> Tensor:
    """g(pre) (`kernels.g`) in a new tensor with no other temporary, overwriting `pre` (with relu(pre)).

    g(v) = σ(min(v, 0)) + max(v, 0): v + ½ for v >= 0 (σ(0) = ½ exactly), σ(v) for v < 0, the same
    numbers as `g`. No autograd: `pre` must be a fresh buffer nobody else reads."""
    out = torch.clamp(pre, max=0).sigmoid_()  # [..., H]
    return out.add_(pre.clamp_(min=0))


def _project(linear: nn.Linear, x: Tensor) -> Tensor:
    """linear(x) into a pooled recording buffer (`buffered_linear`; no autograd): the compiled path's
    projections, whose outputs the gates kernel then overwrites in place. x: [..., d_in]."""
    return buffered_linear(x, linear.weight, linear.bias)


class _MinimalRecurrence(Mixer):
    """Shared frame: h_t = a_t ⊙ h_{t-1} + b_t with a, b computed from the input in parallel."""

    state_names = ("h",)
    gate_names: tuple[str, ...] = ()  # the parallel quantities, in hook order
    paper_name = ""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        self.W_out = nn.Linear(cfg.d_hidden, cfg.d_model)

    def state_specs(self) -> dict[str, HookSpec]:
        return {"h": (B_HIDDEN, "initial hidden state h_{-1}")}

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b), each [batch, pos, d_hidden], firing the hooks of the parallel quantities."""
        raise NotImplementedError

    def compiled_gates_scan(self, x: Tensor, h0: Tensor) -> tuple[Tensor, ...]:
        """(gates in `gate_names` order..., h), each [batch, pos, d_hidden], from the compiled
        gates + scan kernel (no hooks fired). CPU, no autograd."""
        raise NotImplementedError

    def coefficients_from_gates(self, gates: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(a, b), each [batch, pos, d_hidden], from the (hooked) gates: the step inputs of a replay."""
        raise NotImplementedError

    def _gates_fuse(self, x: Tensor, h0: Tensor) -> bool:
        """Whether the compiled gates + scan kernel may run: CPU, no gradient wanted, and no hook
        that may edit a gate (an edited gate must feed the scan, so those go gates first)."""
        if any(hook_may_edit(self.hook_point(name)) for name in self.gate_names):
            return False
        return use_compiled_kernels(x, h0, *self.parameters())

    def _run_gates_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The fused path through the compiled gates + scan kernel: one pass writes the gates and h;
        the gate hooks (read-only here) then see the gates, and an editing hook on h replays the
        loop from a, b built from the gates only then."""
        self.last_kernel = f"compiled C++ {self.paper_name} gates + linear scan (CPU, no grad)"
        with torch.no_grad():
            *gates, h = self.compiled_gates_scan(x, state["h"])  # [batch, pos, H] each
        named = {name: self.hook_point(name)(value) for name, value in zip(self.gate_names, gates, strict=True)}
        del gates
        built: dict[str, Tensor] = {}

        def coefficient(name: str) -> Tensor:
            if not built:
                built.update(zip("ab", self.coefficients_from_gates(named), strict=True))
            return built[name]

        inputs = LazyInputs({"a": lambda: coefficient("a"), "b": lambda: coefficient("b")}, x.shape[1])
        values, final = run_recurrence(
            self._step, inputs, state, {"h": self.hook_h}, self._state_at, ("h",), needed=("h",),
            first_pass=lambda wanted: ({"h": h}, {"h": h[:, -1]}),
            segment_pass=lambda wanted, start, stop, before: self._scan_segment(inputs, start, stop, before),
        )
        named.clear()  # free the gates (unless recorded) and a, b before the output projection
        built.clear()
        return self.hook_out(_project(self.W_out, values["h"])), final

    def _scan_segment(
        self, inputs: Mapping[str, Tensor], start: int, stop: int, before: State
    ) -> tuple[dict[str, Tensor], State]:
        """h over positions [start, stop) from the state `before`, by the fastest linear scan: the
        segments of an edited run after the compiled gates + scan pass."""
        a, b = inputs["a"][:, start:stop].contiguous(), inputs["b"][:, start:stop].contiguous()  # [batch, k, H]
        _, kernel = fastest_linear_scan(a, b, before["h"])
        h = kernel(a, b, before["h"].contiguous())
        return {"h": h}, {"h": h[:, -1]}

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        h = emit("h", inputs["a"] * state["h"] + inputs["b"])  # [batch, H]
        return {"h": h}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"h": values["h"][:, t]}

    def _run(self, x: Tensor, state: State, fused: bool) -> tuple[Tensor, State]:
        if fused and self._gates_fuse(x, state["h"]):
            return self._run_gates_fused(x, state)
        coefficients = dict(zip("ab", self.coefficients(x), strict=True))  # a, b: [batch, pos, H]

        def scan(wanted: set[str]) -> tuple[dict[str, Tensor], State]:
            a, b, h0 = coefficients["a"], coefficients["b"], state["h"]
            return run_scan(a, b, h0)

        def run_scan(a: Tensor, b: Tensor, h0: Tensor) -> tuple[dict[str, Tensor], State]:
            if use_triton(a, b, h0):
                from workbench.kernels.triton_scan import triton_linear_scan

                self.last_kernel = "Triton linear scan (CUDA)"
                h = triton_linear_scan(a, b, h0)
                return {"h": h}, {"h": h[:, -1]}
            # recording without gradients: the compiled C++ scan on CPU (one pass), else the loop's own
            # arithmetic in chunks (several times faster on CPU than the log-space form,
            # benchmarks/bench_cpu.py); training: the paper's log space
            track_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, h0))
            if not track_grad and use_compiled_kernels(a, b, h0):
                self.last_kernel = "compiled C++ linear scan (CPU, no grad)"
                h = compiled_linear_scan(a, b, h0)
                return {"h": h}, {"h": h[:, -1]}
            zero_start = not h0.requires_grad and not bool(h0.any())
            positive = track_grad and bool((a > 0).all() and (b > 0).all()) and (
                zero_start or bool((h0 > 0).all()))
            if positive:
                self.last_kernel = "log-space parallel scan (Heinsen 2023)"
                log_h0 = None if zero_start else torch.log(h0)
                h = log_space_scan(torch.log(a), torch.log(b), log_h0)
            else:
                self.last_kernel = "chunked linear scan"
                h = linear_scan(a, b, h0)
            return {"h": h}, {"h": h[:, -1]}

        values, final = run_recurrence(
            self._step, dict(coefficients), state, {"h": self.hook_h}, self._state_at, ("h",),
            needed=("h",), first_pass=scan if fused else None,
            segment_pass=(lambda wanted, start, stop, before: run_scan(
                coefficients["a"][:, start:stop].contiguous(), coefficients["b"][:, start:stop].contiguous(),
                before["h"].contiguous())) if fused else None,
        )
        coefficients.clear()  # free a, b (not recorded) before the output projection allocates
        return self.hook_out(self.W_out(values["h"])), final

    def forward_reference(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, fused=False)

    def forward_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, fused=True)


class MinGRUMixer(_MinimalRecurrence):
    """minGRU: z_t = σ(W_z x_t), h̃_t = g(W_h x_t), h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t."""

    quantities = ("z", "h_tilde", "h", "out")
    gate_names = ("z", "h_tilde")
    paper_name = "minGRU"

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        self.W_z = nn.Linear(cfg.d_model, cfg.d_hidden)
        self.W_h = nn.Linear(cfg.d_model, cfg.d_hidden)

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "z": (BP_HIDDEN, "update gate z_t = σ(W_z x_t + b_z)"),
            "h_tilde": (BP_HIDDEN, "candidate h̃_t = g(W_h x_t + b_h), g(v) = v + ½ (v ≥ 0) else σ(v)"),
            "h": (BP_HIDDEN, "hidden state h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t"),
            "out": (RESID, "mixer output W_out h_t + b_out"),
        }

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if _needs_grad(x, self):
            z = self.hook_z(torch.sigmoid(self.W_z(x)))  # [batch, pos, H]
            h_tilde = self.hook_h_tilde(g(self.W_h(x)))  # [batch, pos, H]
            return 1 - z, z * h_tilde
        # recording without autograd: a and b reuse the projections' buffers (no other temporaries;
        # peak memory, benchmarks/bench_cpu.py section E), same numbers
        with torch.no_grad():
            pre_z = self.W_z(x)  # [batch, pos, H], becomes a
            z = self.hook_z(torch.sigmoid(pre_z))
            a = torch.sub(z.new_tensor(1.0), z, out=pre_z)  # 1 - z
            pre_h = self.W_h(x)  # [batch, pos, H], becomes b
            h_tilde = self.hook_h_tilde(_g_consuming(pre_h))
            return a, torch.mul(z, h_tilde, out=pre_h)

    def compiled_gates_scan(self, x: Tensor, h0: Tensor) -> tuple[Tensor, ...]:
        # the projections' fresh buffers become z and h̃
        return compiled_mingru_gates_scan(_project(self.W_z, x), _project(self.W_h, x), h0)

    def coefficients_from_gates(self, gates: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        z = gates["z"]
        return 1 - z, z * gates["h_tilde"]


class MinLSTMMixer(_MinimalRecurrence):
    """minLSTM: h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t with f', i' = f, i normalised to sum to one."""

    quantities = ("f", "i", "h_tilde", "h", "out")
    gate_names = ("f", "i", "h_tilde")
    paper_name = "minLSTM"

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        self.W_f = nn.Linear(cfg.d_model, cfg.d_hidden)
        self.W_i = nn.Linear(cfg.d_model, cfg.d_hidden)
        self.W_h = nn.Linear(cfg.d_model, cfg.d_hidden)

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "f": (BP_HIDDEN, "normalised forget gate f'_t = f_t / (f_t + i_t), f_t = σ(W_f x_t + b_f)"),
            "i": (BP_HIDDEN, "normalised input gate i'_t = i_t / (f_t + i_t), i_t = σ(W_i x_t + b_i)"),
            "h_tilde": (BP_HIDDEN, "candidate h̃_t = g(W_h x_t + b_h)"),
            "h": (BP_HIDDEN, "hidden state h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t"),
            "out": (RESID, "mixer output W_out h_t + b_out"),
        }

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if _needs_grad(x, self):
            forget, inject = torch.sigmoid(self.W_f(x)), torch.sigmoid(self.W_i(x))  # [batch, pos, H]
            total = forget + inject
            f = self.hook_f(forget / total)
            i = self.hook_i(inject / total)
            h_tilde = self.hook_h_tilde(g(self.W_h(x)))
            return f, i * h_tilde
        # recording without autograd: f and i are divided in place in the projections' buffers, b
        # reuses the candidate's (no other temporary but the sum; peak memory, bench_cpu.py section E)
        with torch.no_grad():
            forget, inject = self.W_f(x).sigmoid_(), self.W_i(x).sigmoid_()  # [batch, pos, H]
            total = forget + inject
            f = self.hook_f(forget.div_(total))
            i = self.hook_i(inject.div_(total))
            del total
            pre_h = self.W_h(x)  # [batch, pos, H], becomes b
            h_tilde = self.hook_h_tilde(_g_consuming(pre_h))
            return f, torch.mul(i, h_tilde, out=pre_h)

    def compiled_gates_scan(self, x: Tensor, h0: Tensor) -> tuple[Tensor, ...]:
        # the projections' fresh buffers become f', i' and h̃
        return compiled_minlstm_gates_scan(_project(self.W_f, x), _project(self.W_i, x), _project(self.W_h, x), h0)

    def coefficients_from_gates(self, gates: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return gates["f"], gates["i"] * gates["h_tilde"]
