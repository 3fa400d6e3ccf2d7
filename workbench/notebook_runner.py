"""Run a workbench notebook headless (nbclient) and keep the executed copy and an HTML page of it.

Used by `workbench tour` and by the test suite, so the README's first command and CI execute the
notebooks the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
          "eight": "8", "nine": "9", "ten": "10"}
_DURATION = re.compile(
    r"(\d+(?:\.\d+)?)(?:\s*(?:–|-|to)\s*(\d+(?:\.\d+)?))?\s*(s|secs?|seconds?|mins?|minutes?)\b", re.I
)
_TIME_PARAGRAPH = re.compile(r"^\*\*\s*(time|how long)\b", re.I)


def stated_seconds(notebook: str | Path) -> float:
    """The running time a notebook promises, in seconds: the largest duration named in the
    paragraph of its first cell that starts with `**Time:**` or `**How long.**` ("about 30 s, up to
    1 minute when busy" -> 60). Other durations in the header (a model "trained for 20 s", "ten
    minutes of reading") are not promises and are not read."""
    import nbformat

    header = nbformat.read(Path(notebook), as_version=4).cells[0].source
    paragraphs = [p for p in re.split(r"\n\s*\n", header) if _TIME_PARAGRAPH.match(p.strip())]
    if not paragraphs:
        raise ValueError(f"{Path(notebook).name}: its first cell has no '**Time:**' paragraph stating "
                         "how long it runs")
    text = re.sub(r"\b(" + "|".join(_WORDS) + r")\b", lambda m: _WORDS[m.group(1).lower()], paragraphs[0],
                  flags=re.I)
    found = [float(high or low) * (60.0 if unit.lower().startswith("min") else 1.0)
             for low, high, unit in _DURATION.findall(text)]
    if not found:
        raise ValueError(f"{Path(notebook).name}: its time paragraph names no duration ('about 2 minutes')")
    return max(found)


def notebooks_dir() -> Path:
    """The notebooks: the repository's `notebooks/` in a clone or editable install, else the copy an
    installed wheel carries (`workbench/notebooks`), else `notebooks/` in the working directory."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "notebooks", package / "notebooks", Path.cwd() / "notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    raise FileNotFoundError(
        "cannot find the notebooks/ folder: install recurrent-workbench from a wheel or run this from a clone"
    )


@dataclass
class NotebookRun:
    """Where the executed notebook and its HTML went, and how long it took."""

    executed: Path
    html: Path | None
    seconds: float


def execute_notebook(
    notebook: str | Path, timeout: int = 300, kernel_name: str = "python3", progress: bool = False
):
    """Execute `notebook` top to bottom in a fresh kernel; return (executed node, seconds).

    Shared by `workbench tour` and the project's scripts; plain nbclient, the client under
    `jupyter nbconvert --execute` and papermill, with nothing added (the tests run those two
    themselves). `progress`: a tqdm bar over the code cells (in the terminal, where the notebook's
    own bars are not seen).
    """
    import nbformat
    from nbclient import NotebookClient
    from tqdm.auto import tqdm

    source = Path(notebook)
    nb = nbformat.read(source, as_version=4)
    code_cells = sum(1 for cell in nb.cells if cell.cell_type == "code" and cell.source.strip())
    bar = tqdm(total=code_cells, desc=source.stem, unit="cell", disable=not progress)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(source.parent)}},
                            on_cell_executed=lambda **_: bar.update(1))
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        bar.close()
    return nb, time.perf_counter() - start


def run_notebook(
    notebook: str | Path, out_dir: str | Path, timeout: int = 900, kernel_name: str = "python3",
    progress: bool = False,
) -> NotebookRun:
    """Execute `notebook`, then write the executed copy and an HTML page of it to `out_dir`."""
    import nbformat

    source = Path(notebook)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nb, seconds = execute_notebook(source, timeout=timeout, kernel_name=kernel_name, progress=progress)
    executed = out / source.name
    nbformat.write(nb, executed)
    html = None
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        html = executed.with_suffix(".html")
        html.write_text(body, encoding="utf-8")
    except ImportError:
        pass
    return NotebookRun(executed=executed, html=html, seconds=seconds)
