"""Every notebook in notebooks/ runs top to bottom headless, without an error (docs/design.md: "each
runs top to bottom on the embedded default in minutes on a 2-core CPU, each is executed by the test
suite"). Its stated time is held as a safety net only (tests/notebook_limits.py); how long each
takes is measured by benchmarks/bench_notebooks.py.

Each notebook runs in a fresh kernel through `workbench.notebook_runner.run_notebook`, the same
function `workbench tour` uses. A notebook that its module's own test already executes (e.g.
tests/notebooks/test_cells_notebook.py) is not run a second time; the tour always runs here. The
stated time is read from the `**Time:**` (or `**How long.**`) paragraph of the notebook's first cell
(`workbench.notebook_runner.stated_seconds`): the largest figure named there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from tests.notebook_limits import CELL_TIMEOUT_S, assert_within_safety_net  # noqa: E402
from workbench.notebook_runner import notebooks_dir, run_notebook, stated_seconds  # noqa: E402

ALL_NOTEBOOKS = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
TESTS = Path(__file__).resolve().parents[1]


def executed_elsewhere(notebook: Path) -> bool:
    """Whether another test file names this notebook (its module's own notebook test, with its own
    content checks): then it is not executed a second time here, which would cost minutes of the
    suite's 2-core budget."""
    here = Path(__file__).resolve()
    return any(notebook.name in path.read_text(encoding="utf-8", errors="replace")
               for path in TESTS.rglob("test_*.py") if path.resolve() != here)


NOTEBOOKS = [n for n in ALL_NOTEBOOKS if n.stem.startswith("00_") or not executed_elsewhere(n)]


def test_every_notebook_states_what_it_shows_and_how_long_it_takes():
    assert ALL_NOTEBOOKS, "no notebooks found"
    for notebook in ALL_NOTEBOOKS:
        header = nbformat.read(notebook, as_version=4).cells[0]
        assert header.cell_type == "markdown" and header.source.startswith("# "), notebook.name
        assert 0 < stated_seconds(notebook) <= 600, notebook.name


def test_stated_seconds_reads_ranges_and_units_of_the_time_paragraph_only(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# x\n\nTen minutes of reading; a model trained for 20 s.\n\n"
        "**Time:** about 30 s for the demo, 1–2 minutes with an embedded model; three s.")])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    assert stated_seconds(path) == 120.0
    nb.cells[0].source = "# x\n\nIn ten minutes of reading.\n\n**How long.** About 30 s, up to one minute when busy."
    nbformat.write(nb, path)
    assert stated_seconds(path) == 60.0
    nb.cells[0].source = "# x\n\nRuns in about 2 minutes."  # no time paragraph: no promise the test can hold
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="Time"):
        stated_seconds(path)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_without_error(notebook: Path, tmp_path: Path):
    result = run_notebook(notebook, tmp_path, timeout=CELL_TIMEOUT_S)
    executed = nbformat.read(result.executed, as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{notebook.name}: {errors[0].ename}: {errors[0].evalue}"
    tracebacks = [o.text for o in outputs if o.output_type == "stream" and "Traceback" in o.text]
    assert not tracebacks, f"{notebook.name} printed a traceback:\n{tracebacks[0][:2000]}"
    assert all(cell.get("execution_count") for cell in executed.cells if cell.cell_type == "code")
    assert_within_safety_net(notebook.name, result.seconds, stated_seconds(notebook))
