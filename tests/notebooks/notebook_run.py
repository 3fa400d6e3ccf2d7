"""Shared step of the module notebooks' tests: run one notebook headless with `jupyter nbconvert
--to notebook --execute` (tests/notebooks/standard_runners.py), fail on any error cell, and hand back
its outputs for the content checks (time is only a safety net: tests/notebook_limits.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat

from tests.notebooks.standard_runners import executed_by_nbconvert

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_within_stated_time(name: str) -> list[dict]:
    """Execute notebooks/`name`; assert it showed no error and did not run far past its **Time:**
    paragraph (a safety net); return the outputs of its code cells, in order."""
    nb = nbformat.read(executed_by_nbconvert(NOTEBOOKS / name), as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


def stream_text(outputs: list[dict]) -> str:
    """Everything the cells printed."""
    return "".join(o.get("text", "") for o in outputs)


def rich_text(outputs: list[dict], mime: str) -> str:
    """Every rich output of one MIME type (text/html, text/plain), joined."""
    return "".join(o.get("data", {}).get(mime, "") for o in outputs)


def plotly_figures(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
