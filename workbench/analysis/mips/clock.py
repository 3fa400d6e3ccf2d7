"""The clock MIPS budgets are counted on: CPU seconds of this process, not wall-clock seconds.

A wall-clock budget buys less training on a busy machine (the same task solved at load 1 fails at
load 8), so results would depend on the neighbours; CPU time measures the work the search did.
With one torch thread (the benchmark's setting) a CPU second is a second of one core.
"""

from __future__ import annotations

import time

__all__ = ["cpu_seconds"]


def cpu_seconds() -> float:
    """CPU time used by this process so far (all its threads), in seconds."""
    return time.process_time()
