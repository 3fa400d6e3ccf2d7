"""Suite-wide settings: one torch thread per test process (CI runs 2 processes on 2 cores)."""

from __future__ import annotations

import os

import torch

torch.set_num_threads(int(os.environ.get("WORKBENCH_TEST_THREADS", "1")))
