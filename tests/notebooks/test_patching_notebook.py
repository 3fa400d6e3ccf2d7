"""notebooks/06_patching.ipynb runs top to bottom headless, in the time its header promises, and
states its finding with numbers next to its controls."""

import re

import pytest

from .notebook_run import plotly_figures, run_within_stated_time, stream_text

pytest.importorskip("nbclient")

PERCENT_WITH_INTERVAL = r"[+-]?\d+% \[[+-]?\d+%, [+-]?\d+%\]"
LOGITS_WITH_INTERVAL = r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]"


@pytest.mark.notebook
@pytest.mark.slow
def test_patching_notebook_states_its_finding_and_its_controls_within_its_stated_time():
    outputs = run_within_stated_time("06_patching.ipynb")
    assert len(plotly_figures(outputs)) >= 2  # the sweep's heatmap and attribution's
    text = stream_text(outputs)
    finding = re.search(rf"FINDING \(n=(\d+) pairs.*restores ({PERCENT_WITH_INTERVAL})", text)
    assert finding, text[-3000:]
    assert int(finding.group(1)) >= 8
    assert re.search(rf"CONTROL: .*control pairs moves the metric by {LOGITS_WITH_INTERVAL} logits", text)
    assert re.search(rf"equal-norm random edit .* by {LOGITS_WITH_INTERVAL} logits", text)
    assert "NEGATIVE:" in text
    assert re.search(r"Spearman with the real effects .*: all [+-]\d\.\d\d", text)
    assert "notebook ran in" in text
