"""notebooks/02_lens.ipynb runs top to bottom headless, in the time its header promises."""

import re

import pytest

from .notebook_run import plotly_figures, rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")

CI = r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]"  # mean [95% CI]

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
    state = re.search(r"FINDING \(state lens, ([\w-]+)\): at layer 0 the fitted state lens on h_t (reads it worse "
                      r"than|reads it better than|cannot be told apart from) the tuned lens on the block output "
                      rf"\(({CI}) vs ({CI}) bits\)", text)
    assert state, text[-4000:]
    control = re.search(r"CONTROL: at every layer the fit beats .* by (\d+\.\d\d) to (\d+\.\d\d) bits \(smallest "
                        r"lower bound (-?\d+\.\d\d)\)", text)
    assert control and float(control.group(3)) > 0, "the fitted state lens no longer beats its unfitted start"
    depth = re.search(rf"at relative depth 0.5 the tuned-lens KL ranges from ({CI}) bits \(([\w-]+)\) to ({CI}) "
                      r"\(([\w-]+)\); the intervals (do not|do) overlap", text)
    assert depth, text[-4000:]
    assert "linux" not in depth.group(0), "the like-for-like comparison must hold the corpus fixed"
    assert "CAVEAT:" in text
    dla = re.search(r"the summands add up to (-?\d+\.\d+) \(error (\d\.\de[+-]\d+)\)", text)
    assert dla and float(dla.group(2)) < 1e-4, "direct logit attribution no longer adds up"
