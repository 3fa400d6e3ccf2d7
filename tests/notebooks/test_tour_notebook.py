"""notebooks/00_tour.ipynb runs headless, and its demos demonstrate: the causal edit moves the
predictions after the edit (and not before) far beyond its control, the largest saturated cell, and
the quote cell it shows beats its nulls on held-out text."""

import re

import pytest

from .notebook_run import run_within_stated_time, stream_text

pytest.importorskip("nbclient")

NUMBER = r"([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)"


@pytest.mark.notebook
@pytest.mark.slow
def test_tour_demos_show_their_effects_against_their_controls():
    text = stream_text(run_within_stated_time("00_tour.ipynb"))
    edit = re.search(rf"moves log p by up to {NUMBER} after the edit and {NUMBER} before it; the control, the "
                     rf"largest cell \d+ \(c = {NUMBER}, tanh\(c\) = {NUMBER}\), moves it by at most {NUMBER}", text)
    assert edit, text[-3000:]
    after, before, c_largest, _, control = (float(g) for g in edit.groups())
    assert after > 0.05, "the chosen unit's push no longer visibly moves the predictions"
    assert before < 1e-4, "the edit changed predictions before its position"
    assert abs(c_largest) > 5 and control < 1e-3, "the control is no longer a saturated cell that moves nothing"
    assert after > 1000 * control
    quote = re.search(rf"the quote cell L\d [ch]\[\d+\] scores held-out r = {NUMBER} against a shifted-feature null "
                      rf"whose 95th percentile is {NUMBER} \(p = {NUMBER}\) and random units' {NUMBER}", text)
    assert quote, text[-3000:]
    score, null95, p, random95 = (float(g) for g in quote.groups())
    assert score > 0.4 and score > null95 and score > random95 and p <= 0.05
    assert "tour ran in" in text
