"""Every notebook in notebooks/ runs top to bottom headless, without an error (docs/design.md: "each
runs top to bottom on the embedded default in minutes on a 2-core CPU, each is executed by the test
suite"). Its stated time is held as a safety net only (tests/notebook_limits.py); how long each
takes is measured by benchmarks/bench_notebooks.py.

Each notebook runs in a fresh kernel under the standard runners a user reaches for
(tests/notebooks/standard_runners.py): `jupyter nbconvert --to notebook --execute`, once per test run
and shared with the module notebook's own content checks (e.g. tests/notebooks/test_cells_notebook.py)
and the offline-HTML browser test, and `papermill`. Both used to stall at random on the widget cells
(docs/design.md, "Standard runners"); each run here is killed and failed when far past its stated time. The
stated time is read from the `**Time:**` (or `**How long.**`) paragraph of the notebook's first cell
(`workbench.notebook_runner.stated_seconds`): the largest figure named there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from tests.notebooks.standard_runners import executed_by_nbconvert, execute  # noqa: E402
from workbench.notebook_runner import notebooks_dir, stated_seconds  # noqa: E402

ALL_NOTEBOOKS = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
TESTS = Path(__file__).resolve().parents[1]


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


def assert_ran_cleanly(executed_path: Path) -> None:
    """No error output, no printed traceback, every code cell executed."""
    executed = nbformat.read(executed_path, as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{executed_path.name}: {errors[0].ename}: {errors[0].evalue}"
    tracebacks = [o.text for o in outputs if o.output_type == "stream" and "Traceback" in o.text]
    assert not tracebacks, f"{executed_path.name} printed a traceback:\n{tracebacks[0][:2000]}"
    assert all(cell.get("execution_count") for cell in executed.cells if cell.cell_type == "code")


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("notebook", ALL_NOTEBOOKS, ids=[n.stem for n in ALL_NOTEBOOKS])
def test_notebook_runs_under_nbconvert_execute(notebook: Path):
    """`jupyter nbconvert --to notebook --execute`, within the stated time (the run is shared)."""
    assert_ran_cleanly(executed_by_nbconvert(notebook))


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("notebook", ALL_NOTEBOOKS, ids=[n.stem for n in ALL_NOTEBOOKS])
def test_notebook_runs_under_papermill(notebook: Path, tmp_path: Path):
    """`papermill notebook out.ipynb`, within the stated time."""
    executed, _ = execute("papermill", notebook, tmp_path)
    assert_ran_cleanly(executed)
