"""Held-out pieces spread over a text: cut where the lexer is clean, so the joined pieces' features
are exact, and each piece is recorded with its own context, as one pass over its file gives."""

import numpy as np
import pytest

from workbench.analysis.cells import compute_features, planted_lstm, record
from workbench.analysis.cells.sampling import clean_line_starts, join_recordings, run_sample, spread_sample

from .test_controls import code_with_strings

LEXICAL = ["in_string", "in_docstring", "in_comment", "bracket_depth", "paren_depth", "indent_depth"]


def test_pieces_start_at_clean_lines_and_their_features_are_the_sources():
    source = code_with_strings(80, seed=3)
    starts = set(clean_line_starts(source).tolist())
    sample = spread_sample(source, 6, 700)
    assert len(sample.spans) == 6
    assert all(a in starts and (b in starts or b == len(source)) for a, b in sample.spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(sample.spans, sample.spans[1:], strict=False))
    assert sample.spans[-1][1] > len(source) * 0.8  # spread over the whole source, not its head
    whole = compute_features(source, LEXICAL)
    joined = compute_features(sample.text, LEXICAL)
    for name in LEXICAL:
        expected = np.concatenate([whole[name][a:b] for a, b in sample.spans])
        np.testing.assert_array_equal(joined[name], expected, err_msg=name)
    assert sample.offsets[-1] == len(sample) and list(np.diff(sample.offsets)) == [b - a for a, b in sample.spans]


def test_a_line_inside_a_docstring_or_a_bracket_is_not_a_clean_start():
    source = 'x = (1,\n     2)\n"""doc\nmore\n"""\ny = 3\n'
    starts = clean_line_starts(source).tolist()
    assert starts == [0, source.index('"""'), source.index("y = 3"), len(source)]


def test_run_sample_records_each_piece_in_its_context():
    model = planted_lstm(d_hidden=16, seed=2)
    source = code_with_strings(40, seed=4)
    sample = spread_sample(source, 4, 500)
    run = run_sample(model, source, sample, ["c", "h"], lead_in=64, batch=3)
    assert run.recording.text == sample.text and run.probs.shape[0] == len(sample)
    i = 2
    (a, b), off = sample.spans[i], int(sample.offsets[i])
    alone = record(model, source[a - 64 : b], ["c"])
    np.testing.assert_allclose(run.recording.get(0, "c")[off : off + b - a], alone.get(0, "c")[64:], atol=1e-4)
    np.testing.assert_allclose(run.probs.sum(-1), 1.0, atol=1e-4)
    both = join_recordings(run.recording, run.recording)
    assert len(both) == 2 * len(sample) and both.get(0, "h").shape[0] == 2 * len(sample)


def test_spread_sample_names_what_is_wrong():
    with pytest.raises(ValueError, match="too short"):
        spread_sample("x = 1\n" * 10, 5, 100)
    with pytest.raises(ValueError, match="positive"):
        spread_sample("x = 1\n" * 10, 0, 10)
