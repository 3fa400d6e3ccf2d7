"""notebooks/01_cells.ipynb runs top to bottom headless, in the time its header promises."""

import pytest

from .notebook_run import rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_cells_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("01_cells.ipynb")
    html = rich_text(outputs, "text/html")
    assert html.count('class="wb-c"') > 1000  # the text heatmaps rendered
    text = stream_text(outputs)
    assert "notebook ran in" in text
