"""notebooks/02_lens.ipynb runs top to bottom headless, in the time its header promises."""

import pytest

from .notebook_run import plotly_figures, rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_lens_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("02_lens.ipynb")
    text = stream_text(outputs)
    text += rich_text(outputs, "text/plain")
    assert "notebook ran in" in text
    assert "round trip exact: True" in text and "refused: this tuned lens was trained for model" in text
    assert "KL to the final layer (bits), logit vs tuned" in text
    figures = plotly_figures(outputs)
    assert len(figures) >= 6  # trajectories, training, evaluation, top-k
