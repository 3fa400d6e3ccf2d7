"""notebooks/04_implicit_attention.ipynb runs top to bottom headless, in the time its header promises."""

import pytest

from .notebook_run import plotly_figures, rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_implicit_attention_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("04_implicit_attention.ipynb")
    text = stream_text(outputs)
    assert "upper triangles exactly zero: True" in text
    assert "notebook ran in" in text
    figures = plotly_figures(outputs)
    assert len(figures) >= 4  # three maps and the perturbation curves
    html = rich_text(outputs, "text/html")
    assert 'data-query="1"' in html  # the query rows over the text rendered
