"""This process's resident memory (Linux /proc): now, and the peak since a reset, for memory checks."""

from __future__ import annotations

import re
import resource

_KIB = 1024


def _status_field(field: str) -> int | None:
    """A `/proc/self/status` field in bytes (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * _KIB if match else None


def current_rss() -> int:
    """Resident bytes of this process now (the lifetime peak where /proc is missing)."""
    now = _status_field("VmRSS")
    return now if now is not None else peak_rss()


def peak_rss() -> int:
    """Peak resident bytes since the last `reset_peak_rss` (else since the process started)."""
    peak = _status_field("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KIB


def reset_peak_rss() -> bool:
    """Restart the peak count at the current RSS (Linux 4.0+); False where the kernel cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True
