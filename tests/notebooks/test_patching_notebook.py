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
    routes = re.search(r"layer 1's recurrence alone carries ([+-]?\d+)% \[([+-]?\d+)%, ([+-]?\d+)%\], layer 0's "
                       r"alone ([+-]?\d+)% \[([+-]?\d+)%, ([+-]?\d+)%\]", text)
    assert routes, text[-3000:]
    layer1_low, layer0_high = int(routes.group(2)), int(routes.group(6))
    assert layer1_low > layer0_high, "layer 1's recurrence no longer clearly carries more than layer 0's"
    control = re.search(r"control substitution moves the metric by at most (\d+\.\d\d) logits", text)
    bracket = re.search(rf"vs ({LOGITS_WITH_INTERVAL}) for the bracket", text)
    assert control and bracket
    assert float(control.group(1)) < 0.25 * float(bracket.group(1).split()[0]), "the control is not small"
    ranks = re.findall(r"knocking out bracket -> last character in layer (\d) alone moves the metric by "
                       rf"({LOGITS_WITH_INTERVAL}) logits; the bracket ranks (\d+) of", text)
    assert len(ranks) == 2 and all(rank == "1" for _, _, rank in ranks), ranks
