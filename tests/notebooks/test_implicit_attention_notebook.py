"""notebooks/04_implicit_attention.ipynb runs top to bottom headless, in the time its header promises,
and its stated conclusions hold against the controls it computes: on random windows no attribution
method beats the recency baseline, and on long-range closing brackets attr ranks the opener far above
recency and random, yet ties with recency in the deletion curves."""

import re

import pytest

from .notebook_run import plotly_figures, rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")

NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def finding(text: str, start: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"Finding: {start}")]
    assert len(lines) == 1, f"expected one finding starting {start!r}"
    return lines[0]


@pytest.mark.notebook
@pytest.mark.slow
def test_implicit_attention_notebook_runs_and_its_conclusions_hold_against_its_controls():
    outputs = run_within_stated_time("04_implicit_attention.ipynb")
    text = stream_text(outputs)
    assert "upper triangles exactly zero: True" in text
    assert "notebook ran in" in text
    figures = plotly_figures(outputs)
    assert len(figures) >= 5  # three maps and two sets of perturbation curves
    html = rich_text(outputs, "text/html")
    assert 'data-query="1"' in html  # the query rows over the text rendered
    assert len(re.findall(r"^Finding: ", text, flags=re.M)) == 8  # every section but the widget's ends with one

    # random windows: attr loses to recency, with an interval that excludes zero, and beats random
    random_windows = finding(text, "on 32 random windows")
    m = re.search(rf"attr loses to the recency baseline \(gap {NUMBER} vs {NUMBER}; attr − recency {NUMBER}, "
                  rf"95% CI \[{NUMBER}, {NUMBER}\]\)", random_windows)
    assert m, random_windows
    attr_gap, recency_gap, diff, low, high = map(float, m.groups())
    assert attr_gap < recency_gap and diff < 0 and high < 0
    assert re.search(rf"far above random \({NUMBER}\)", random_windows)
    assert float(re.search(rf"far above random \({NUMBER}\)", random_windows).group(1)) < attr_gap / 2
    assert "attribution here does not beat locality" in random_windows

    # long-range brackets: attr ranks the opener far above recency and random, ties in the curves
    brackets = finding(text, "on 96 closing brackets")
    ranks = re.search(rf"attr ranks the opener at median {NUMBER}.*against recency's {NUMBER} and random's {NUMBER}",
                      brackets)
    assert ranks, brackets
    attr_rank, recency_rank, random_rank = map(float, ranks.groups())
    assert attr_rank + 8 <= recency_rank and attr_rank + 8 <= random_rank
    curves = re.search(rf"attr ties with recency \(gap {NUMBER} vs {NUMBER}, difference {NUMBER}, "
                       rf"95% CI \[{NUMBER}, {NUMBER}\]\)", brackets)
    assert curves, brackets
    attr_gap, recency_gap, diff, low, high = map(float, curves.groups())
    assert low <= diff <= high and low < 0 < high and abs(attr_gap - recency_gap) < 0.5
    assert "but that does not pay in the deletion curves" in brackets
    opener = re.search(rf"deleting the opener alone raises the bracket's loss by {NUMBER} nats", brackets)
    assert float(opener.group(1)) > 0.5  # the opener matters causally
