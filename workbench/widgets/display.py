"""Shared display helpers of the widgets: whether a live kernel can show rich output."""

from __future__ import annotations


def in_kernel() -> bool:
    """True inside a Jupyter kernel; outside one, `display()` would only print a figure's repr."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
