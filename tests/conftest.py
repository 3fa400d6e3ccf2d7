"""Suite-wide settings: one torch thread per test process (CI runs 2 processes on 2 cores).

Without a GPU, Triton kernels run under Triton's interpreter, so the CPU suite tests them too; the
variable must be set before any kernel module is imported (triton.jit reads it at decoration).
"""

from __future__ import annotations

import os

import torch

torch.set_num_threads(int(os.environ.get("WORKBENCH_TEST_THREADS", "1")))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
