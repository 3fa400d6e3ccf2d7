"""Which kernel the fused path runs: the forward-only GPU kernels when they may be used, the compiled
CPU kernels, else the pure-PyTorch ones; for the classic RNNs, the gate-writing loops or the library
kernel plus gate recovery. Kept apart from the kernels so that importing the mixers
never imports Triton (about 80 ms) on a machine that will not use it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .cpu_compiled import (
    compiled_elman_forward_recording,
    compiled_gru_forward_recording,
    compiled_lstm_forward_recording,
    use_compiled_kernels,
)
from .rnn_gates import elman_pre_from_hidden, gru_gates_from_hidden, lstm_gates_from_hidden
from .rnn_recording import (
    elman_forward_recording,
    gru_forward_recording,
    lstm_forward_recording,
    onednn_step_matmul_available,
)

__all__ = [
    "RECORDING_LOOP_MIN_WIDTH",
    "fastest_linear_scan",
    "fastest_rnn_recording",
    "fastest_selective_scan",
    "step_matmul_backend",
    "use_recording_loop",
    "use_triton",
]


def use_triton(*tensors: Tensor | None) -> bool:
    """Triton's forward-only kernels run where every tensor is on a CUDA device, no gradient is
    wanted through them (recording, evaluation), and Triton imports."""
    present = [t for t in tensors if t is not None]
    if not present or not all(t.is_cuda for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    from workbench.kernels.triton_scan import triton_available

    return triton_available()


def fastest_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state0: Tensor | None
) -> tuple[str, Callable[..., tuple[Tensor, Tensor]]]:
    """(name, kernel) of the fastest S6 scan for these inputs, all with `selective_scan`'s contract:
    Triton on CUDA, the compiled C++ scan on CPU (both when no gradient is needed), else the
    chunked PyTorch scan (any device, differentiable)."""
    if use_triton(u, delta, A, B, C):
        from workbench.kernels.triton_selective_scan import triton_selective_scan

        return "Triton selective scan (CUDA)", triton_selective_scan
    from workbench.kernels.cpu_compiled import compiled_selective_scan, use_compiled_kernels

    if use_compiled_kernels(u, delta, A, B, C, D, state0):  # CPU, no gradient needed, C++ kernel built
        return "compiled C++ selective scan (CPU)", compiled_selective_scan
    from workbench.kernels.selective_scan import selective_scan

    return "chunked selective scan", selective_scan


def fastest_linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None
) -> tuple[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]]:
    """(name, kernel) of the fastest scan h_t = a_t ⊙ h_{t-1} + b_t returning every h, all with
    `linear_scan`'s contract: Triton on CUDA, the compiled C++ scan on CPU for [batch, pos, d]
    inputs (both when no gradient is needed), else the chunked PyTorch scan (differentiable)."""
    if use_triton(a, b, h0):
        from workbench.kernels.triton_scan import triton_linear_scan

        return "Triton linear scan (CUDA)", triton_linear_scan
    from workbench.kernels.cpu_compiled import compiled_linear_scan, use_compiled_kernels

    if a.dim() == 3 and a.shape == b.shape and use_compiled_kernels(a, b, h0):
        return "compiled C++ linear scan (CPU, no grad)", compiled_linear_scan
    from workbench.kernels.linear_scan import linear_scan

    return "chunked linear scan", linear_scan


# ----- the fused path of the classic recurrences (Elman / LSTM / GRU) ---------------------------

# Below this many elements per position (batch * d_hidden) the gate-writing loop's per-step Python
# overhead outweighs the two large matmuls that gate recovery repeats after the library kernel
# (benchmarks/cpu_results.md, "Choices measured").
RECORDING_LOOP_MIN_WIDTH = 4096

RNNFamily = Literal["elman", "lstm", "gru"]
# (x [batch, pos, d_in], state {name: [batch, H]}, the torch.nn.RNN/LSTM/GRU holding the weights)
#   -> (values {quantity: [batch, pos, H]}, final state {name: [batch, H]})
RNNRecordingKernel = Callable[[Tensor, Mapping[str, Tensor], nn.RNNBase], tuple[dict[str, Tensor], dict[str, Tensor]]]


@dataclass(frozen=True)
class _RNNKernels:
    """One family's kernels and the names `last_kernel` reports for them."""

    states: tuple[str, ...]  # state names in the kernels' argument order
    compiled: Callable[..., dict[str, Tensor]]  # (x, *states, *weights) -> every quantity
    loop: Callable[..., dict[str, Tensor]]  # same contract, the Python gate-writing loop
    recover: Callable[..., dict[str, Tensor]]  # (x, h, *states, *weights) -> the non-h quantities
    compiled_name: str
    loop_name: str  # formatted with the step matmul's backend
    library_name: str  # formatted with the device type
    recovery_suffix: str  # appended to library_name when the gates are recovered


_RNN_KERNELS: dict[str, _RNNKernels] = {
    "elman": _RNNKernels(
        ("h",), compiled_elman_forward_recording, elman_forward_recording,
        lambda *args: {"pre": elman_pre_from_hidden(*args)},
        "compiled C++ pre-activation-writing Elman loop (CPU, no grad)",
        "pre-activation-writing Elman loop (CPU, no grad, {})",
        "torch.nn.RNN ({}) + parallel pre-activation recovery", ""),
    "lstm": _RNNKernels(
        ("h", "c"), compiled_lstm_forward_recording, lstm_forward_recording, lstm_gates_from_hidden,
        "compiled C++ gate-writing LSTM loop (CPU, no grad)",
        "gate-writing LSTM loop (CPU, no grad, {})",
        "torch.nn.LSTM ({})", " + parallel gate recovery"),
    "gru": _RNNKernels(
        ("h",), compiled_gru_forward_recording, gru_forward_recording, gru_gates_from_hidden,
        "compiled C++ gate-writing GRU loop (CPU, no grad)",
        "gate-writing GRU loop (CPU, no grad, {})",
        "torch.nn.GRU ({})", " + parallel gate recovery"),
}


def use_recording_loop(x: Tensor, width: int, parameters: Iterable[Tensor]) -> bool:
    """CPU, no gradient wanted and wide enough steps (batch * width): the Python gate-writing loop
    beats the library kernel plus recovery."""
    if x.device.type != "cpu" or x.shape[0] * width < RECORDING_LOOP_MIN_WIDTH:
        return False
    return not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in parameters))


def step_matmul_backend(x: Tensor) -> str:
    """The recurrent matmul the recording loops use for x (kernels.rnn_recording.StepMatmul)."""
    packed = x.dtype == torch.float32 and onednn_step_matmul_available()
    return "oneDNN packed matmul" if packed else "torch.addmm"


def _weights(cell: nn.RNNBase) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return cell.weight_ih_l0, cell.weight_hh_l0, cell.bias_ih_l0, cell.bias_hh_l0


def fastest_rnn_recording(
    family: RNNFamily,
    x: Tensor,
    state: Mapping[str, Tensor],
    gates: bool,
    width: int,
    parameters: Sequence[Tensor],
) -> tuple[str, RNNRecordingKernel]:
    """(name, kernel) of the fastest way to run an Elman / LSTM / GRU layer over x, recording every
    gate when `gates` (else h alone): the compiled C++ gate-writing loop (CPU, no grad, any width),
    the Python gate-writing loop (CPU, no grad, batch * width >= RECORDING_LOOP_MIN_WIDTH), else
    the library kernel (cuDNN / oneDNN), followed by parallel gate recovery when gates are wanted.
    `parameters`: every parameter gradients could flow to (the mixer's)."""
    kernels = _RNN_KERNELS[family]
    states = [state[name] for name in kernels.states]
    if gates and use_compiled_kernels(x, *states, *parameters):
        return kernels.compiled_name, _recording_kernel(kernels, kernels.compiled)
    if gates and use_recording_loop(x, width, parameters):
        return kernels.loop_name.format(step_matmul_backend(x)), _recording_kernel(kernels, kernels.loop)
    name = kernels.library_name.format(x.device.type) + (kernels.recovery_suffix if gates else "")
    return name, _library_kernel(kernels, gates)


def _recording_kernel(kernels: _RNNKernels, run: Callable[..., dict[str, Tensor]]) -> RNNRecordingKernel:
    """A gate-writing loop as an RNNRecordingKernel: the final state is its last position."""

    def kernel(x: Tensor, state: Mapping[str, Tensor], cell: nn.RNNBase) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        values = run(x, *(state[name] for name in kernels.states), *_weights(cell))
        return values, {name: values[name][:, -1] for name in kernels.states}

    return kernel


def _library_kernel(kernels: _RNNKernels, gates: bool) -> RNNRecordingKernel:
    """The torch.nn module's own forward, then (if `gates`) every gate recovered in parallel from h."""

    def kernel(x: Tensor, state: Mapping[str, Tensor], cell: nn.RNNBase) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        initial = [state[name] for name in kernels.states]  # [batch, H] each
        stacked = tuple(s[None].contiguous() for s in initial)  # [1, batch, H] each
        h, last = cell(x, stacked if len(stacked) > 1 else stacked[0])  # h: [batch, pos, H]
        last = last if isinstance(last, tuple) else (last,)
        values = {"h": h}
        if gates:
            values.update(kernels.recover(x, h, *initial, *_weights(cell)))
        return values, {name: s[0] for name, s in zip(kernels.states, last, strict=True)}

    return kernel
