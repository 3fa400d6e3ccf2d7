"""The README's Python examples run as written, in order, in one namespace (they are the first
code a user copies)."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.io as pio
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run(monkeypatch: pytest.MonkeyPatch):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the README lost its script examples"
    monkeypatch.setattr(pio, "show", lambda *args, **kwargs: None)  # headless: no browser
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    assert "table" in namespace and len(namespace["table"]) > 0  # the patching sweep produced rows
