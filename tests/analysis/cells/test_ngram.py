"""n-gram baseline (Witten-Bell) and the error breakdown (paper Figs. 5, 6) on known corpora."""

import random

import numpy as np
import pytest

from workbench.analysis.cells import (
    NGramModel,
    error_analysis,
    long_range_analysis,
    next_char_probs,
    planted_lstm,
    printable_tokenizer,
)
from workbench.analysis.cells.ngram import ErrorAnalysis


def deterministic_order2_text(length: int, seed: int = 0) -> str:
    """Each character is a fixed function of the two before it: a 3-gram is exactly right."""
    rng = random.Random(seed)
    alphabet = "abcd"
    table = {a + b: rng.choice(alphabet) for a in alphabet for b in alphabet}
    out = ["a", "b"]
    while len(out) < length:
        nxt = table[out[-2] + out[-1]]
        if out[-1] + nxt == out[0] + out[1]:  # avoid a short cycle: perturb through a rule
            nxt = alphabet[(alphabet.index(nxt) + 1) % 4]
            table[out[-2] + out[-1]] = nxt
        out.append(nxt)
    return "".join(out)


def test_witten_bell_matches_the_formula_and_sums_to_one():
    m = NGramModel(3, vocab="abc").fit("abcabcab")
    # unigram: C = a3 b3 c2, N = 8, T = 3 -> P1 = (C + 3/3) / 11
    p1 = (np.array([3, 3, 2]) + 1.0) / 11
    # context "b": followed by c twice (b at the end has no successor), T = 1
    p2 = (np.array([0, 0, 2]) + 1 * p1) / 3
    # context "ab": followed by c twice, T = 1
    p3 = (np.array([0, 0, 2]) + 1 * p2) / 3
    np.testing.assert_allclose(m.distribution("xab"), p3)
    np.testing.assert_allclose(m.distribution("cb"), p2)  # unseen "cb" backs off to "b"
    probs = m.predict_proba("abcaab")
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert probs.shape == (6, 3)


def test_ngram_of_the_right_order_is_exactly_right_on_a_deterministic_corpus():
    text = deterministic_order2_text(3000)
    m = NGramModel(3, "abcd").fit(text[:2000])
    p = m.correct_probs(text[2000:])
    assert p[1:].min() > 0.5  # every character after the first context is predicted right


def test_all_rnn_errors_are_ngram_explained_when_the_ngram_is_exact():
    tok = printable_tokenizer()
    text = deterministic_order2_text(2400)
    train, test = text[:2000], text[2000:]
    model = planted_lstm(tok)  # a model that knows nothing of this corpus
    probs = next_char_probs(model, test)
    result = error_analysis(test, probs, train, tok.chars, n=3)
    assert isinstance(result, ErrorAnalysis)
    errors = result.model_errors
    assert errors.sum() > 300  # the untrained model errs nearly everywhere
    cats = result.category[errors]
    assert (cats[1:] == "ngram").all()  # the first target has a 1-char context only
    counts = result.counts().set_index("category")
    assert counts.errors.sum() == errors.sum()
    assert counts.loc["ngram", "fraction"] > 0.99
    summary = result.summary()
    assert summary["ngram_error_rate"] < 0.01 and summary["model_wrong_ngram_right"] >= 398


def test_error_categories_follow_the_paper_definitions():
    vocab = list("ab xyz.\n")
    train = "ab ab ab ab ab ab. xy xy xy xy xy xy.\n" * 3
    text = "zyx zyx zyx. ab"
    probs = np.full((len(text), len(vocab)), 1.0 / len(vocab))  # a model that knows nothing
    probs[11] = 0.1
    probs[11, vocab.index(" ")] = 0.3  # the model half-knew the space after "."
    result = error_analysis(text, probs, train, vocab, n=2, memory_n=4, rare_count=0)
    expected = {
        1: "rare_word", 2: "rare_word",  # inside "zyx", never seen in training
        3: "other",  # a space after x, which the bigram says is followed by y
        4: "rare_word", 5: "rare_word", 6: "rare_word",
        7: "dynamic_memory", 8: "dynamic_memory",  # "zyx " and "yx z" occurred earlier
        9: "dynamic_memory", 10: "dynamic_memory",
        11: "punctuation",
        12: "boost",  # p = 0.3 >= 0.25
        13: "word_start",  # "ab" is common, but its first letter needs a word model
        14: "ngram",  # the bigram knows b follows a
    }
    assert dict(enumerate(result.category.tolist(), start=1)) == expected
    assert result.model_errors.all()
    assert result.p_ngram.shape == (len(text) - 1,)


def test_long_range_analysis_measures_distance_to_the_matching_bracket():
    text = 'f(a, "(", (b))\n'
    p = np.full(len(text) - 1, 0.9)
    analysis = ErrorAnalysis(text, p, np.full(len(text) - 1, 0.1), np.array([""] * (len(text) - 1)), 3)
    per, binned = long_range_analysis(analysis)
    assert per.distance.tolist() == [2, 12]  # the ")" in the string is skipped
    row = binned[binned.brackets > 0]
    assert row.model_right_ngram_wrong.tolist() == [1.0, 1.0]


def test_long_range_bins_keep_empty_bins_and_give_intervals_that_shrink_with_more_brackets():
    rng = np.random.default_rng(0)
    text = "".join("f(" + "x" * int(rng.integers(0, 30)) + ")\n" for _ in range(200))
    p_model = rng.uniform(0.2, 1.0, len(text) - 1)
    analysis = ErrorAnalysis(text, p_model, np.full(len(text) - 1, 0.1), np.array([""] * (len(text) - 1)), 3)
    per, binned = long_range_analysis(analysis, bins=(1, 6, 11, 21, 41))
    assert binned.bin.astype(str).tolist() == ["1-5", "6-10", "11-20", "21-40", "41+"]
    assert binned.brackets.sum() == len(per) == 200 and binned.brackets.iloc[-1] == 0
    assert np.isnan(binned.p_model.iloc[-1]) and np.isnan(binned.p_model_lo.iloc[-1])
    full = binned[binned.brackets > 0]
    assert (full.p_model_lo <= full.p_model).all() and (full.p_model <= full.p_model_hi).all()
    assert np.allclose(full.p_ngram_lo, 0.1) and np.allclose(full.p_ngram_hi, 0.1)
    widths = (full.p_model_hi - full.p_model_lo).to_numpy()
    counts = full.brackets.to_numpy()
    assert widths[np.argmax(counts)] < widths[np.argmin(counts)]  # more brackets, a tighter interval


def test_unknown_characters_and_bad_shapes_raise():
    m = NGramModel(2, "ab").fit("abab")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        m.correct_probs("abc")
    with pytest.raises(ValueError, match="expected"):
        error_analysis("ab", np.zeros((3, 2)), "abab", "ab")
