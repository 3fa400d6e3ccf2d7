"""workbench.notebook_runner: a notebook executes in a fresh kernel, and with `progress` a tqdm bar in
the terminal counts its code cells (what `workbench tour` shows while the tour runs headless)."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from workbench.notebook_runner import execute_notebook  # noqa: E402


@pytest.mark.notebook
def test_run_notebook_counts_code_cells_on_a_terminal_progress_bar(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# a notebook"),
        nbformat.v4.new_code_cell("x = 6 * 7"),
        nbformat.v4.new_code_cell("print(x)"),
    ])
    source = tmp_path / "tiny.ipynb"
    nbformat.write(nb, source)
    executed, seconds = execute_notebook(source, timeout=60, progress=True)
    err = capsys.readouterr().err
    assert "tiny" in err and "2/2" in err, err[-500:]
    assert executed.cells[2].outputs[0].text == "42\n"
    assert seconds > 0
