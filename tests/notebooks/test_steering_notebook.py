"""notebooks/03_steering.ipynb runs top to bottom headless, in the time its header promises."""

import pytest

from .notebook_run import plotly_figures, run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_steering_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("03_steering.ipynb")
    figures = plotly_figures(outputs)
    assert len(figures) >= 5  # pair cosines, sweeps, comparison, two persistence charts
    text = stream_text(outputs)
    assert "refused:" in text  # a saved vector refused another model
    assert "notebook ran in" in text
