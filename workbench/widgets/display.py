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


def error_html(exc: BaseException) -> str:
    """An exception as a red box inside a widget: its class and message, HTML-escaped."""
    import html

    return (
        '<div style="color:#b00020;font-family:sans-serif;padding:4px;'
        f'border-left:3px solid #b00020"><b>{html.escape(type(exc).__name__)}</b>: '
        f"{html.escape(str(exc))}</div>"
    )
