"""notebooks/03_steering.ipynb runs top to bottom headless, in the time its header promises, and its
stated conclusions hold against the controls it computes: three residual vectors beat every
equal-norm random direction at equal fluency cost, the mean-position comment vector steers backwards
while the last-position one steers forwards, state steering at every position piles up, persistence
comes with intervals over many held-out texts, and the 0.5-multiplier generation is spam."""

import re

import pytest

from .notebook_run import plotly_figures, run_within_stated_time, stream_text

pytest.importorskip("nbclient")

NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def finding(text: str, start: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"Finding: {start}")]
    assert len(lines) == 1, f"expected one finding starting {start!r}"
    return lines[0]


def number(pattern: str, line: str) -> tuple[float, ...]:
    m = re.search(pattern, line)
    assert m, f"{pattern!r} not in {line!r}"
    return tuple(float(g) for g in m.groups())


@pytest.mark.notebook
@pytest.mark.slow
def test_steering_notebook_runs_and_its_conclusions_hold_against_its_controls():
    outputs = run_within_stated_time("03_steering.ipynb")
    figures = plotly_figures(outputs)
    assert len(figures) >= 6  # pair cosines, sweeps, trade-offs, comparison, two persistence charts
    text = stream_text(outputs)
    assert "refused:" in text  # a saved vector refused another model
    assert "notebook ran in" in text
    assert len(re.findall(r"^Finding: ", text, flags=re.M)) == 6  # every section but the widget's

    # equal fluency cost, against equal-norm random directions
    sweeps = finding(text, "at equal fluency cost")
    (random_max,) = number(rf"against at most ±{NUMBER} for equal-norm random directions", sweeps)
    for behaviour in ("open_quote", "indent", "upper_case"):
        (effect,) = number(rf"{behaviour} {NUMBER}", sweeps)
        assert effect > random_max, behaviour
    (comment,) = number(rf"comment {NUMBER} against", sweeps)
    assert comment < 0  # the mean-position comment vector lowers p('#')
    assert "(open_quote, indent, upper_case raise it beyond every random direction)" in sweeps
    # the comment vector: backwards when read as a mean, an in-comment direction; forwards at the end
    backwards, inside, before = number(rf"steers backwards \(Spearman {NUMBER}\): it is an 'inside a comment' "
                                       rf"direction \(projection {NUMBER} sd inside comments, {NUMBER} right before",
                                       sweeps)
    assert backwards < -0.5 and inside > 2 * before
    forwards, last_effect, last_random = number(rf"steers forwards \(Spearman {NUMBER}, Δp {NUMBER} at Δbpc "
                                                rf"0.25 against ±{NUMBER} random\)", sweeps)
    assert forwards > 0.5 and last_effect > 2 * last_random

    # residual + state: the state pushed at every position piles up
    pile = finding(text, "pushing the state at every position piles up")
    growth, low, high = number(rf"has moved {NUMBER}x \(95% CI {NUMBER}–{NUMBER}\)", pile)
    assert low > 5 and low <= growth <= high
    both_cost, residual_cost = number(rf"costs {NUMBER} bits per character against {NUMBER} for the residual", pile)
    both, residual = number(rf"by only {NUMBER} against {NUMBER};", pile)
    assert both_cost > 2 * residual_cost and both < residual / 2

    # persistence: every model with a 95% interval over 32 held-out texts
    persist = finding(text, "50 characters after one injection")
    assert persist.endswith("over 32 held-out texts.")
    kept = re.findall(rf"{NUMBER} of its change \(95% CI {NUMBER}–{NUMBER}, KL", persist)
    assert len(kept) == 4
    for mean, lo, hi in kept:
        assert float(lo) <= float(mean) <= float(hi) and float(hi) - float(lo) > 0

    # generation: within the cost budget the quotes barely show, at x0.5 they are spam
    generation = finding(text, "the greedy continuation")
    clean, within, spam = number(rf"holds {NUMBER}% .* unsteered, {NUMBER}% at x.* and {NUMBER}% at x0.5", generation)
    assert spam > 40 and spam > within >= clean
