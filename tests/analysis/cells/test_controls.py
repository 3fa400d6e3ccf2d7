"""Controls for discovered cells, on recordings whose units are planted by hand: the nulls pass a
unit that tracks its feature and fail one that does not; conditional scores tell a quote cell from
a docstring cell and a string cell from a parenthesis counter."""

import random

import numpy as np
import pytest

from workbench.analysis.cells import CellRecording, compute_features
from workbench.analysis.cells.controls import conditional_correlation, validate_cell


def code_with_strings(n_blocks: int = 60, seed: int = 0) -> str:
    """Functions with docstrings, one-line strings mostly inside calls, comments and nesting."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "value", "item", "path"]
    out = []
    for b in range(n_blocks):
        out.append(f"def f{b}(x, y={rng.randint(0, 9)}):\n")
        doc = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        out.append(f'    """{doc.capitalize()}.\n\n    More about {rng.choice(words)}.\n    """\n')
        for _ in range(rng.randint(1, 4)):
            s = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            out.append(rng.choice([f'    print("{s}", x)\n', f"    log(g('{s}'), [y, {rng.randint(0, 9)}])\n",
                                   f"    z = h(x, (y + {rng.randint(1, 9)}) * 2)  # {s}\n"]))
        out.append("    return x\n\n")
    return "".join(out)


@pytest.fixture(scope="module")
def planted():
    """Units: 0 docstring cell, 1 quote cell (one-line strings), 2 paren counter, 3..9 noise."""
    text = code_with_strings()
    f = compute_features(text, ["in_string", "in_docstring", "paren_depth"])
    rng = np.random.default_rng(0)
    one_line = f["in_string"] * (1 - f["in_docstring"])
    noise = rng.normal(size=(len(text), 10))
    units = 0.5 * noise
    units[:, 0] += f["in_docstring"]
    units[:, 1] += one_line
    units[:, 2] += f["paren_depth"]
    tokens = np.zeros(len(text), dtype=np.int64)
    return CellRecording(text, tokens, {(0, "c"): units.astype(np.float32)}, "lstm"), f


def test_conditional_correlation_holds_a_confound_fixed_and_restricts_to_a_subset(planted):
    rec, f = planted
    x = rec.get(0, "c")
    one_line = f["in_string"] * (1 - f["in_docstring"])
    raw = conditional_correlation(x, one_line)
    assert raw[2] > 0.3, "the planted text should put one-line strings inside parentheses"
    fixed = conditional_correlation(x, one_line, given=f["paren_depth"])
    assert abs(fixed[2]) < 0.05 and fixed[1] > 0.3  # the paren counter loses its string score; the quote cell keeps it
    among_strings = conditional_correlation(x, f["in_docstring"], within=f["in_string"] == 1)
    assert among_strings[0] > 0.5 and among_strings[1] < -0.5  # docstring cell vs quote cell
    outside_doc = conditional_correlation(x, f["in_string"], within=f["in_docstring"] == 0)
    assert outside_doc[1] > 0.5 and abs(outside_doc[0]) < 0.1
    both = conditional_correlation(x, np.stack([one_line, f["paren_depth"]], 1))
    assert both.shape == (10, 2) and np.allclose(both[:, 0], raw, atol=1e-5, equal_nan=True)


def test_conditional_correlation_matches_pearson_and_rejects_bad_shapes():
    rng = np.random.default_rng(1)
    x, f = rng.normal(size=(300, 3)), rng.normal(size=300)
    expected = [np.corrcoef(x[:, u], f)[0, 1] for u in range(3)]
    assert np.allclose(conditional_correlation(x, f), expected, atol=1e-5)
    with pytest.raises(ValueError, match="same pos"):
        conditional_correlation(x, f[:10])
    with pytest.raises(ValueError, match="within"):
        conditional_correlation(x, f, within=np.ones(5, bool))
    with pytest.raises(ValueError, match="too small"):
        conditional_correlation(x, f, within=np.zeros(300, bool))


def test_validate_cell_picks_the_planted_quote_cell_and_it_beats_both_nulls(planted):
    rec, f = planted
    quote = validate_cell(rec, "in_string", within=f["in_docstring"] == 0, n_shifts=60)
    assert (quote.layer, quote.quantity, quote.unit) == (0, "c", 1)
    assert quote.score > 0.5 and quote.beats_nulls()
    assert quote.p_value == pytest.approx(1 / 61)
    assert quote.shift_null.shape == quote.shifts.shape == (60,)
    assert np.nanmax(quote.shift_null) < quote.score
    assert "L0 c[1]" in quote.summary()


def test_validate_cell_does_not_pass_a_feature_no_unit_tracks(planted):
    rec, _ = planted
    rng = np.random.default_rng(7)
    runs = np.repeat(rng.integers(0, 2, size=len(rec) // 20 + 1), 20)[: len(rec)].astype(float)
    check = validate_cell(rec, runs, name="random runs", n_shifts=60)
    assert check.feature == "random runs"
    assert not check.beats_nulls()
    assert check.p_value > 0.05


def test_validate_cell_names_what_is_wrong(planted):
    rec, _ = planted
    with pytest.raises(ValueError, match="min_shift"):
        validate_cell(rec, "in_string", min_shift=len(rec))
    with pytest.raises(KeyError, match="unknown feature"):
        validate_cell(rec, "in_strng")
