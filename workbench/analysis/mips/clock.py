"""The clock MIPS stage times are reported in: CPU seconds of this process, not wall-clock seconds.

Reported only: budgets are work-seconds (`work.py`), since any clock, CPU time included, stops a
search at a step that depends on the machine. CPU time is the report that load changes least; with one
torch thread (the benchmark's setting) a CPU second is a second of one core.
"""

from __future__ import annotations

import time

__all__ = ["cpu_seconds"]


def cpu_seconds() -> float:
    """CPU time used by this process so far (all its threads), in seconds."""
    return time.process_time()
