"""Fast paths for recurrent models (installed as `workbench.kernels`).

Each fast kernel sits beside the step-by-step reference it is tested against:
`linear_scan` / `linear_scan_reference`; `log_space_scan` and Heinsen's closed form
`log_space_scan_heinsen` / `log_space_scan_reference`; `selective_scan` /
`selective_scan_reference`; and gate recovery after a fused library RNN
(`lstm_gates_from_hidden`, `gru_gates_from_hidden`, `elman_pre_from_hidden`).
These are pure PyTorch: any device, float32 and float64, differentiable.

Forward-only kernels for recording (no autograd), each tested against the same references:
`triton_scan` / `triton_selective_scan` / `triton_rnn` (Triton, CUDA; on CPU under
TRITON_INTERPRET=1 in the tests) and `cpu_compiled` (C++ built by load_inline: the S6 scan, its
conv + SiLU, the diagonal linear scan, minGRU / minLSTM gates + scan in one pass, and the Elman,
LSTM and GRU gate-writing loops). `rnn_recording` holds the PyTorch gate-writing
loops. The mixers and adapters dispatch among them as measured (`dispatch`; benchmarks/cpu_results.md,
gpu_results.md). Large CPU outputs come from `buffers`' pooled huge-page mappings.
"""

from __future__ import annotations

import importlib.util

import torch

from .linear_scan import linear_scan, linear_scan_reference
from .log_scan import g, log_g, log_space_scan, log_space_scan_heinsen, log_space_scan_reference
from .rnn_gates import elman_pre_from_hidden, gru_gates_from_hidden, lstm_gates_from_hidden
from .selective_scan import selective_scan, selective_scan_reference

__all__ = [
    "available_kernels",
    "elman_pre_from_hidden",
    "g",
    "gru_gates_from_hidden",
    "linear_scan",
    "linear_scan_reference",
    "log_g",
    "log_space_scan",
    "log_space_scan_heinsen",
    "log_space_scan_reference",
    "lstm_gates_from_hidden",
    "selective_scan",
    "selective_scan_reference",
]


def available_kernels() -> dict[str, bool]:
    """Which backends exist here: {"torch": True, "cuda": ..., "triton": ..., "triton_cuda": ...}.

    "triton" means the package is importable (checked without importing it); "triton_cuda" means
    the Triton kernels could run (Triton importable and a CUDA device present). Whether the compiled
    CPU kernels are built is `cpu_compiled.compiled_kernels_available()` (it may build them).
    """
    cuda = torch.cuda.is_available()
    triton = importlib.util.find_spec("triton") is not None
    return {"torch": True, "cuda": cuda, "triton": triton, "triton_cuda": triton and cuda}
