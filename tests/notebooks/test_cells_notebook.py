"""notebooks/01_cells.ipynb runs top to bottom headless, in the time its header promises, and each of
its stated conclusions holds against the control it computes: the quote cell beats its nulls and is
a quote cell by its conditional scores, saturation is stated as found, and the bracket bins are full."""

import re

import pytest

from .notebook_run import plotly_figures, rich_text, run_within_stated_time, stream_text

pytest.importorskip("nbclient")

R = r"([+-]?\d+\.\d+)"


@pytest.mark.notebook
@pytest.mark.slow
def test_cells_notebook_states_its_findings_against_their_controls_within_its_stated_time():
    outputs = run_within_stated_time("01_cells.ipynb")
    html = rich_text(outputs, "text/html")
    assert html.count('class="wb-c"') > 1000  # the text heatmaps rendered
    assert len(plotly_figures(outputs)) >= 4  # discovery, saturation, error breakdown, brackets
    text = stream_text(outputs)
    assert "notebook ran in" in text
    assert text.count("FINDING:") == 7, "every section states its finding"

    discovery = re.search(r"FINDING: (\d+) of (\d+) features have a best unit that beats both nulls", text)
    assert discovery and int(discovery.group(1)) >= 1, text[-3000:]

    quote = re.search(rf"the quote-cell pick (L\d [ch]\[\d+\]) scores r = {R} on the test pieces \(shifted-feature "
                      rf"null 95th percentile {R}, p = {R}; random units {R}\); it keeps r = {R} with paren depth "
                      rf"fixed, and among strings it scores {R} for docstrings, so it is a ([^;]+);", text)
    assert quote, text[-4000:]
    score, null95, p, random95, paren_fixed, docstrings = (float(quote.group(i)) for i in range(2, 8))
    assert score > null95 and score > random95 and p <= 0.05, "the quote cell no longer beats its nulls"
    assert paren_fixed > 0.3, "the quote cell's string score does not survive holding paren depth fixed"
    assert quote.group(8).startswith("quote cell") and docstrings <= 0, "the chosen unit is not a quote cell"
    plain = re.search(rf"Discovery's plain in_string pick (L\d [ch]\[\d+\]) \(r = {R}\) scores {R} on one-line "
                      rf"strings vs code and {R} on docstrings vs one-line strings: a ([a-z -]+)\.", text)
    assert plain, text[-4000:]
    if plain.group(1) != quote.group(1):
        assert float(plain.group(3)) < score, "the plain pick separates one-line strings better than the quote cell"

    saturation = re.search(r"FINDING: layer 0 has (\d+) of (\d+) forget-gate units shut on more than half the "
                           r"characters, (which contradicts|as) the paper's", text)
    assert saturation, text[-4000:]
    shut, units = int(saturation.group(1)), int(saturation.group(2))
    assert (saturation.group(3) == "which contradicts") == (shut > 0.1 * units)

    brackets = re.search(rf"FINDING: over (\d+) closing brackets, .* p = {R} \[{R}, {R}\] when its opener is (\S+) "
                         rf"characters back \(n = (\d+)\) against the 5-gram's {R} \[{R}, {R}\].*every bin holds at "
                         rf"least (\d+) brackets", text)
    assert brackets, text[-4000:]
    assert int(brackets.group(1)) >= 300 and int(brackets.group(10)) >= 15, "the bracket bins are not filled"
    model_lo, model_hi = float(brackets.group(3)), float(brackets.group(4))
    assert model_lo <= float(brackets.group(2)) <= model_hi
