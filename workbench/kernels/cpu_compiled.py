"""Compiled C++ CPU kernels, JIT-built on first use: the S6 selective scan (Gu & Dao 2023, Alg. 2),
Mamba's causal depthwise conv + SiLU, the gate-writing Elman, LSTM and GRU recording loops, and the diagonal
linear scan h_t = a_t ⊙ h_{t-1} + b_t, alone or fused with minGRU's / minLSTM's gates.

S6: s_t = exp(delta_t A) * s_{t-1} + (delta_t u_t) B_t,   y_t = s_t C_t + D u_t,   s: [d, n] per row.

Why: on CPU the pure-PyTorch `selective_scan` makes five element-wise passes over [batch, pos, d, n]
and Python dispatches one op per position; this kernel makes one. Each task owns a batch row and a
block of 64 channels, keeps its slice of the state in L1 cache as [n, 64] (vector lanes run over
channels, so no horizontal sums) and walks the positions: exp(delta A) (a vectorisable polynomial
exp for float32, std::exp for float64), the state update and the read-out against C are fused, and
the states are written once only when they are asked for (into `recording_buffer` memory, with
non-temporal stores where aligned). The conv + SiLU works in the [batch, pos, d] layout the scan
reads, with no concatenation or transposes. The LSTM loop replaces `lstm_forward_recording`'s
per-step Python ops by one C++ loop (recurrent product, then one fused gate/cell pass); the GRU and
Elman loops likewise.
The linear scan reads a and b once and writes h once (the chunked PyTorch scan makes two passes and
one Python step per position of a chunk); its minGRU / minLSTM form computes the gates from the
pre-activations in the same pass, writing them over their inputs. Tasks are spread over
`at::parallel_for` (OpenMP in torch's CPU builds), so torch.set_num_threads governs it.

The C++ sources are the repository's top-level `kernels/*.cpp` (shipped in the wheel as
`workbench/kernels/csrc/`). The extension is built by torch.utils.cpp_extension.load (needs a C++
compiler and ninja) the first time it is needed, cached in torch's default extensions
directory, and reused by later processes. If the build fails for any reason,
`compiled_kernels_available()` is False, a warning is logged once and callers keep the PyTorch
paths. WORKBENCH_NO_COMPILED=1 disables the kernels. Forward only, no autograd: the mixers use them
when no gradient is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from .buffers import recording_buffer

__all__ = [
    "compiled_causal_conv_silu",
    "compiled_elman_forward_recording",
    "compiled_gru_forward_recording",
    "compiled_kernels_available",
    "compiled_linear_scan",
    "compiled_lstm_forward_recording",
    "compiled_mingru_gates_scan",
    "compiled_minlstm_gates_scan",
    "compiled_selective_scan",
    "use_compiled_kernels",
    "use_compiled_scan",
]

MAX_CONV_WIDTH = 16  # kernel widths the compiled conv holds in its weight buffer
SMALL_BATCH, SMALL_BATCH_MAX_HIDDEN = 4, 512  # LSTM: in-place product loop up to here (W_hh^T <= 4 MiB)

_LOG = logging.getLogger(__name__)
DISABLE_ENV = "WORKBENCH_NO_COMPILED"

_lock = threading.Lock()
_module: ModuleType | None = None
_failed = False


STALE_LOCK_S = 600.0  # a build lock older than this was left by a process killed mid-build (a build takes ~30 s)


def _cpu_tag() -> str:
    """Short hash of the CPU model and flags, the torch version, the environment and the sources'
    folder: the kernel is built with -march=native against this torch, so a cache shared between
    machines or virtual environments must not hand one's binary to another, and two checkouts sharing
    one environment must not rebuild each other's extension (and wait on its lock) in turn."""
    info = f"{platform.machine()} {torch.__version__} {sys.prefix} {kernel_source_dir()}"
    try:
        with open("/proc/cpuinfo") as f:
            info += "".join(line for line in f if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha1(info.encode()).hexdigest()[:10]


def _wait_for_lock(build_dir: str) -> None:
    """Wait while another process builds the extension; remove a lock left behind by a process
    killed mid-build (torch's own wait on it would never end)."""
    lock = os.path.join(build_dir, "lock")
    while os.path.exists(lock):
        try:
            if time.time() - os.path.getmtime(lock) > STALE_LOCK_S:
                _LOG.warning("removing a stale build lock %s", lock)
                os.remove(lock)
                return
        except OSError:  # released meanwhile
            return
        time.sleep(1.0)


KERNEL_SOURCES = ("selective_scan.cpp", "rnn_recording.cpp", "linear_scan.cpp", "bindings.cpp")
KERNEL_HEADERS = ("cpu_common.h",)


def kernel_source_dir() -> Path:
    """Where the C++ sources are: `csrc/` beside this module in an installed wheel (setup.py copies
    them there), else the repository's top-level `kernels/` (a clone or an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parent.parent / "kernels"):
        if all((candidate / name).is_file() for name in KERNEL_SOURCES + KERNEL_HEADERS):
            return candidate
    raise FileNotFoundError(
        f"the compiled kernels' C++ sources ({', '.join(KERNEL_SOURCES)}) are in neither "
        f"{here / 'csrc'} nor {here.parent.parent / 'kernels'}: the installation is incomplete")


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    source_dir = kernel_source_dir()
    name = f"workbench_cpu_compiled_{_cpu_tag()}"
    build_directory = getattr(cpp_extension, "_get_build_directory", None)  # private: used only if present
    if build_directory is not None:
        _wait_for_lock(build_directory(name, verbose=False))
    _LOG.info("building the compiled CPU kernels %s from %s (first use; about a minute)", name, source_dir)
    return cpp_extension.load(
        name=name,
        sources=[str(source_dir / source) for source in KERNEL_SOURCES],
        extra_include_paths=[str(source_dir)],
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def _load() -> ModuleType | None:
    """The built extension, building it on the first call; None if disabled or the build failed."""
    global _module, _failed
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    if _module is not None or _failed:
        return _module
    with _lock:
        if _module is None and not _failed:
            try:
                _module = _build()
            except Exception as exc:  # no compiler, no ninja, a broken toolchain: keep the torch path
                _failed = True
                last_line = (str(exc).strip().splitlines() or [""])[-1]
                _LOG.warning("compiled CPU kernels unavailable (%s: %s); using the PyTorch path",
                             type(exc).__name__, last_line)
    return _module


def compiled_kernels_available() -> bool:
    """True when the C++ kernels are built (building them now if needed) and not disabled by
    WORKBENCH_NO_COMPILED=1."""
    return _load() is not None


def use_compiled_kernels(*tensors: Tensor | None) -> bool:
    """Whether a computation over `tensors` should run a compiled kernel: all on CPU, float32 or
    float64, no gradient needed (the kernels are forward only), and the kernels are available."""
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    return compiled_kernels_available()


use_compiled_scan = use_compiled_kernels  # the S6 mixer's name for it


def compiled_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state0: Tensor | None = None,
    return_states: bool = False,
) -> tuple[Tensor, Tensor]:
    """Same contract as `selective_scan`: u, delta [batch, pos, d]; A [d, n]; B, C [batch, pos, n];
    D [d]; state0 [batch, d, n] or None (zeros). Returns (y [batch, pos, d], states
    [batch, pos, d, n] if return_states else the last state [batch, d, n]) in the promoted dtype
    (float32 or float64). B, C may also be [batch, pos, groups, n] (Mamba-2's groups of heads): channel
    c then reads group c // (d // groups), so all groups run in one call and write one state buffer.
    CPU only, no autograd; raises RuntimeError if the kernel is unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, pos, d], got shape {tuple(u.shape)}")
    batch, length, d = u.shape
    n = A.shape[-1] if A.dim() == 2 else -1
    groups = B.shape[2] if B.dim() == 4 else 1
    fits = delta.shape == u.shape and A.shape == (d, n) and D.shape == (d,) and groups > 0 and d % groups == 0
    grouped_shape = (batch, length, groups, n) if B.dim() == 4 else (batch, length, n)
    if not fits or B.shape != grouped_shape or C.shape != B.shape:
        raise ValueError(
            f"shapes do not fit S6: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}, D {tuple(D.shape)} (expected B and C "
            f"[batch, pos, n] or [batch, pos, groups, n] with groups dividing d)"
        )
    if state0 is not None and state0.shape != (batch, d, n):
        raise ValueError(f"state0 must be [batch, d, n] = {(batch, d, n)}, got {tuple(state0.shape)}")
    inputs = [u, delta, A, B, C, D] + ([state0] if state0 is not None else [])
    if any(t.device.type != "cpu" for t in inputs):
        raise ValueError("compiled_selective_scan runs on CPU tensors only")
    dtype = torch.float32
    for t in inputs:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compiled_selective_scan supports float32 and float64, got {dtype}")
    u, delta, A, B, C, D = (t.detach().to(dtype).contiguous() for t in (u, delta, A, B, C, D))
    if state0 is not None:
        state0 = state0.detach().to(dtype).contiguous()
    y = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d], recorded as the y hook
    last = u.new_empty(batch, d, n)  # [batch, d, n]
    # [batch, pos, d, n] when recorded; otherwise an unused placeholder
    states = recording_buffer((batch, length, d, n), dtype, "cpu") if return_states else last
    if length == 0 or d == 0 or n == 0 or batch == 0:
        if state0 is not None:
            last.copy_(state0)
        else:
            last.zero_()
        if length > 0:  # n == 0: no state, y = D u
            y.copy_(D * u)
        return y, states if return_states else last
    module.selective_scan_forward(u, delta, A, B, C, D, state0, y, states, last, return_states, groups)
    return y, states if return_states else last


def compiled_causal_conv_silu(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Mamba's causal depthwise conv followed by SiLU, in one pass in the [batch, pos, d] layout:

        u_t = SiLU(bias + sum_j weight[:, j] * xp_{t+j}),  xp = (conv_state, x) along time,

    the same numbers as SiLU(conv1d(cat(conv_state, x^T), groups=d)) without the concatenation, the
    transposes and the separate SiLU pass. x: [batch, pos, d]; conv_state: [batch, d, k-1] (the last
    k-1 inputs before x); weight: [d, 1, k] (nn.Conv1d's) or [d, k]; bias: [d] or None.
    Returns (u [batch, pos, d], new conv state [batch, d, k-1]: the last k-1 entries of xp).
    CPU only, no autograd; raises RuntimeError if the kernel is unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if x.dim() != 3 or weight.dim() != 2:
        raise ValueError(f"x must be [batch, pos, d] and weight [d, k], got {tuple(x.shape)}, {tuple(weight.shape)}")
    batch, length, d = x.shape
    k = weight.shape[1]
    if weight.shape[0] != d or conv_state.shape != (batch, d, k - 1) or (bias is not None and bias.shape != (d,)):
        raise ValueError(
            f"shapes do not fit a depthwise conv: x {tuple(x.shape)}, conv_state {tuple(conv_state.shape)}, "
            f"weight {tuple(weight.shape)}, bias {None if bias is None else tuple(bias.shape)}"
        )
    if not 1 <= k <= MAX_CONV_WIDTH:
        raise ValueError(f"compiled conv supports kernel widths 1..{MAX_CONV_WIDTH}, got {k}")
    tensors = [x, conv_state, weight] + ([bias] if bias is not None else [])
    dtype = torch.float32
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError("compiled_causal_conv_silu runs on CPU tensors only")
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compiled_causal_conv_silu supports float32 and float64, got {dtype}")
    x, conv_state, weight = (t.detach().to(dtype).contiguous() for t in (x, conv_state, weight))
    if bias is not None:
        bias = bias.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d], recorded as the conv hook
    if out.numel() > 0:
        module.causal_conv_silu_forward(x, conv_state, weight, bias, out)
    keep = k - 1  # new conv state: the last k-1 positions of (conv_state, x)
    if length >= keep:
        new_state = x[:, length - keep:].transpose(1, 2).contiguous()  # [batch, d, k-1]
    else:
        new_state = torch.cat([conv_state[..., length:], x.transpose(1, 2)], dim=-1)
    return out, new_state


def _check_rnn_call(
    name: str, family: str, n_gates: int, x: Tensor, states: dict[str, Tensor], weight_ih: Tensor,
    weight_hh: Tensor, biases: tuple[Tensor | None, Tensor | None],
) -> tuple[ModuleType, int, int, int]:
    """The loaded kernels and (batch, pos, H) of a recording-loop call, after checking its shapes
    (weights [n_gates·H, d_in] and [n_gates·H, H], states [batch, H], biases [n_gates·H] or None)
    and that x is a CPU float32 / float64 tensor; raises with every shape named otherwise."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    rows_name = "H" if n_gates == 1 else f"{n_gates}H"
    if x.dim() != 3 or weight_hh.dim() != 2:
        raise ValueError(f"x must be [batch, pos, d_in] and weight_hh [{rows_name}, H], got {tuple(x.shape)}, "
                         f"{tuple(weight_hh.shape)}")
    batch, _, d_in = x.shape
    hidden = weight_hh.shape[1]
    rows = n_gates * hidden
    shapes_fit = (
        weight_hh.shape == (rows, hidden) and weight_ih.shape == (rows, d_in)
        and all(s.shape == (batch, hidden) for s in states.values())
        and all(b is None or b.shape == (rows,) for b in biases)
    )
    if not shapes_fit:
        named_states = ", ".join(f"{k} {tuple(v.shape)}" for k, v in states.items())
        raise ValueError(
            f"shapes do not fit {family}: x {tuple(x.shape)}, {named_states}, "
            f"weight_ih {tuple(weight_ih.shape)}, weight_hh {tuple(weight_hh.shape)}"
        )
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} runs on CPU float32/float64, got {x.device} {x.dtype}")
    return module, batch, x.shape[1], hidden


def _recurrent_operands(weight_hh: Tensor, batch: int, length: int, hidden: int) -> tuple[Tensor | None, object]:
    """How the loop forms h_{t-1} W_hh^T: (W_hh^T for the in-place loop that streams it once per step,
    used for small batches where a matmul call costs more than the product; else None) and (the
    oneDNN-prepacked weight for the other sizes, or None where at::mm serves)."""
    from .rnn_recording import StepMatmul

    small = batch <= SMALL_BATCH and hidden <= SMALL_BATCH_MAX_HIDDEN
    weight_t = weight_hh.T.contiguous() if small else None  # [H, n_gates·H]
    packed = StepMatmul(weight_hh, batch).packed if length > 0 and not small else None
    return weight_t, packed


def compiled_lstm_forward_recording(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`lstm_forward_recording` with the per-position loop in C++: the same contract and numbers.

    One matmul for the input projection of every position (into the recorded gate buffer), then per
    position one recurrent product h_{t-1} W_hh^T (oneDNN with the weight prepacked, as
    `StepMatmul`, else at::mm) and one fused pass that adds it, applies the gate nonlinearities,
    updates c and h and writes i, f, g, o, c, h in place: no Python and no extra passes per step.
    x: [batch, pos, d_in]; h0, c0: [batch, H]; weight_ih: [4H, d_in]; weight_hh: [4H, H]; biases:
    [4H] or None. Returns {"i", "f", "g", "o", "c", "h"}, each [batch, pos, H] (the gates: column
    slices of one [batch, pos, 4H] buffer). CPU, float32 / float64, no autograd."""
    from .rnn_recording import _bias, _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_lstm_forward_recording", "an LSTM", 4, x, {"h0": h0, "c0": c0}, weight_ih, weight_hh,
        (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias = _bias(*(None if b is None else b.to(dtype) for b in (bias_ih, bias_hh)))
        gates = _input_projection(x.contiguous(), weight_ih, bias)  # [batch, pos, 4H], becomes i, f, g, o
        cells = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0, c0 = h0.detach().to(dtype).contiguous(), c0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.lstm_recording_forward(gates, h0, c0, weight_hh, packed, weight_t, cells, hiddens)
    quarters = {name: gates[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("ifgo")}
    return {**quarters, "c": cells, "h": hiddens}


def compiled_gru_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`gru_forward_recording` with the per-position loop in C++: the same contract and numbers.

    r, z = σ(W_i· x + b_i· + W_h· h + b_h·); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}. One matmul for the input projection of every position (into the
    recorded gate buffer), then per position one recurrent product W_h· h_{t-1} + b_h· (small batches: a
    loop streaming W_hh^T once; else oneDNN with the weight prepacked, or at::addmm) and one fused pass
    that writes r, z, n and h in place. x: [batch, pos, d_in]; h0: [batch, H]; weight_ih: [3H, d_in];
    weight_hh: [3H, H]; biases: [3H] or None. Returns {"r", "z", "n", "h"}, each [batch, pos, H]
    (r, z, n: column slices of one [batch, pos, 3H] buffer). CPU, float32 / float64, no autograd."""
    from .rnn_recording import _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_gru_forward_recording", "a GRU", 3, x, {"h0": h0}, weight_ih, weight_hh, (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias_ih = None if bias_ih is None else bias_ih.to(dtype)
        bias_hh = None if bias_hh is None else bias_hh.to(dtype).contiguous()
        gates = _input_projection(x.contiguous(), weight_ih, bias_ih)  # [batch, pos, 3H], becomes r, z, n
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0 = h0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.gru_recording_forward(gates, h0, weight_hh, bias_hh, packed, weight_t, hiddens)
    thirds = {name: gates[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("rzn")}
    return {**thirds, "h": hiddens}


def compiled_elman_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`elman_forward_recording` with the per-position loop in C++: the same contract and numbers.

    pre_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, h_t = tanh(pre_t) (torch.nn.RNN, tanh). One matmul
    for the input projection of every position with both biases (into the recorded pre-activation
    buffer), then per position the recurrent product added in place (small batches: a loop streaming
    W_hh^T once; else oneDNN with the weight prepacked, or at::mm) and one pass writing h.
    x: [batch, pos, d_in]; h0: [batch, H]; weight_ih: [H, d_in]; weight_hh: [H, H]; biases: [H] or
    None. Returns {"pre", "h"}, each [batch, pos, H]. CPU, float32 / float64, no autograd."""
    from .rnn_recording import _bias, _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_elman_forward_recording", "an Elman RNN", 1, x, {"h0": h0}, weight_ih, weight_hh,
        (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias = _bias(*(None if b is None else b.to(dtype) for b in (bias_ih, bias_hh)))
        pres = _input_projection(x.contiguous(), weight_ih, bias)  # [batch, pos, H], becomes pre
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0 = h0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.elman_recording_forward(pres, h0, weight_hh, packed, weight_t, hiddens)
    return {"pre": pres, "h": hiddens}


def _scan_dtype(name: str, tensors: list[Tensor]) -> torch.dtype:
    """The promoted dtype of `tensors` (float32 at least), checked to be a CPU float32 / float64."""
    dtype = torch.float32
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"{name} runs on CPU tensors only, got {t.device}")
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} supports float32 and float64, got {dtype}")
    return dtype


def _check_scan_shapes(name: str, tensors: dict[str, Tensor], h0: Tensor | None) -> tuple[int, int, int]:
    """(batch, pos, d) shared by every [batch, pos, d] tensor in `tensors`; h0 must be [batch, d]."""
    first = next(iter(tensors.values()))
    if first.dim() != 3 or any(t.shape != first.shape for t in tensors.values()):
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in tensors.items())
        raise ValueError(f"{name} needs equal [batch, pos, d] shapes, got {shapes}")
    batch, length, d = first.shape
    if h0 is not None and h0.shape != (batch, d):
        raise ValueError(f"h0 must be [batch, d] = {(batch, d)}, got {tuple(h0.shape)}")
    return batch, length, d


def _consumable(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t` itself when the kernel may write over it (contiguous, of `dtype`), else a fresh copy."""
    t = t.detach()
    return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()


def compiled_linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for t = 0..pos-1 from h_{-1} = h0 (zeros if None), in one pass over
    memory: the same numbers as `linear_scan_reference` (the loop's own arithmetic, in order).

    Each task owns a batch row and a block of channels (whole rows when there are as many rows as
    threads), keeps its slice of h in L1 and walks the positions, vectorised over channels; every h_t
    is written once, into a `recording_buffer`. a, b: [batch, pos, d]; h0: [batch, d] or None.
    Returns h [batch, pos, d] in the promoted dtype (float32 or float64). CPU, no autograd; raises
    RuntimeError if the kernels are unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    batch, length, d = _check_scan_shapes("compiled_linear_scan", {"a": a, "b": b}, h0)
    dtype = _scan_dtype("compiled_linear_scan", [a, b] + ([h0] if h0 is not None else []))
    a, b = (t.detach().to(dtype).contiguous() for t in (a, b))
    h0 = None if h0 is None else h0.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d]
    if out.numel() > 0:
        module.linear_scan_forward(a, b, h0, out)
    return out


def compiled_mingru_gates_scan(pre_z: Tensor, pre_h: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """minGRU's gates and recurrence in one pass (Feng et al. 2024): z = σ(pre_z), h̃ = g(pre_h)
    (g(v) = v + ½ for v ≥ 0, σ(v) below), h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t from h0 (zeros if None).

    Reads the two pre-activations once and writes z, h̃ and h once: z over pre_z and h̃ over pre_h
    when those are contiguous tensors of the promoted dtype (the caller's fresh projection outputs,
    which it must not read again), else over copies. pre_z, pre_h: [batch, pos, d]; h0: [batch, d]
    or None. Returns (z, h_tilde, h), each [batch, pos, d]. CPU, float32 / float64, no autograd."""
    return _gates_scan("compiled_mingru_gates_scan", {"pre_z": pre_z, "pre_h": pre_h}, h0)


def compiled_minlstm_gates_scan(
    pre_f: Tensor, pre_i: Tensor, pre_h: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """minLSTM's gates and recurrence in one pass: f = σ(pre_f), i = σ(pre_i), normalised to
    f' = f / (f + i), i' = i / (f + i); h̃ = g(pre_h); h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t from h0.

    Like `compiled_mingru_gates_scan`, f', i', h̃ are written over the pre-activations (when
    contiguous and of the promoted dtype, else over copies). Returns (f, i, h_tilde, h), each
    [batch, pos, d]. CPU, float32 / float64, no autograd."""
    return _gates_scan("compiled_minlstm_gates_scan", {"pre_f": pre_f, "pre_i": pre_i, "pre_h": pre_h}, h0)


def _gates_scan(name: str, pre: dict[str, Tensor], h0: Tensor | None) -> tuple[Tensor, ...]:
    """Shared body of the minGRU / minLSTM gates + scan wrappers: checks, then one kernel call."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    batch, length, d = _check_scan_shapes(name, pre, h0)
    dtype = _scan_dtype(name, list(pre.values()) + ([h0] if h0 is not None else []))
    gates = [_consumable(t, dtype) for t in pre.values()]  # [batch, pos, d] each, overwritten
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in gates)
    if any(start < end for (_, end), (start, _) in zip(spans, spans[1:], strict=False)):
        raise ValueError(f"{name}: the pre-activations must not share memory (they are overwritten)")
    h0 = None if h0 is None else h0.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d]
    if out.numel() > 0:
        pre_a, pre_i, pre_h = (gates[0], None, gates[1]) if len(gates) == 2 else gates
        module.minimal_gates_scan_forward(pre_a, pre_h, pre_i, h0, out)
    return (*gates, out)
