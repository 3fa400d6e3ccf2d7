"""Error analysis against n-grams (Karpathy, Johnson & Fei-Fei 2015, sections 4.3-4.4).

`NGramModel` is a finite-horizon character n-gram with interpolated Witten-Bell smoothing:

    P_k(c | h) = (C(h_k c) + T(h_k) P_{k-1}(c | h)) / (C(h_k) + T(h_k)),   P_{-1}(c) = 1 / V,

where h_k is the last k characters of the context, C counts training occurrences and T(h_k) is the
number of distinct characters seen after h_k (an unseen h_k backs off: P_k = P_{k-1}). Every
distribution sums to one and gives every vocabulary character some probability.

`error_analysis` peels the model's errors as the paper's Fig. 6 does: an *error* is a character to
which the model gave probability below 0.5 one step earlier; each error goes to the first of the
ordered categories (`ERROR_CATEGORIES`) that explains it. `long_range_analysis` compares the model
with the n-gram on closing brackets by distance to the matching open bracket (paper, Fig. 5).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.analysis.cells.features import lexical_state
from workbench.errors import EmptyInputError, UnknownCharacterError

__all__ = [
    "ERROR_CATEGORIES",
    "ErrorAnalysis",
    "NGramModel",
    "error_analysis",
    "long_range_analysis",
]

ERROR_THRESHOLD = 0.5  # paper 4.4: p(correct character) < 0.5 is an error

# In the order they are peeled off (paper Fig. 6); "other" takes what none explains.
ERROR_CATEGORIES: dict[str, str] = {
    "ngram": "an n-gram oracle (some order 1..n) gives the character p > 0.5",
    "dynamic_memory": "the character completes a string of `memory_n` characters that already "
                      "occurred earlier in the same text (copying would have predicted it)",
    "rare_word": "inside a word seen at most `rare_count` times in the training text",
    "word_start": "the first character of a word, after whitespace or a quote (a word model "
                  "would be needed)",
    "punctuation": "a punctuation character",
    "boost": "the model's top-2 guess or p >= 0.25: a boost of its confidence would fix it",
    "other": "none of the above",
}


class NGramModel:
    """Character n-gram of order `n` (context of n - 1 characters), Witten-Bell interpolated.

    >>> m = NGramModel(2, vocab="ab").fit("abababab")
    >>> round(float(m.distribution("a")[1]), 3)   # P(b | a): 4 of 4 times, T(a) = 1
    0.9
    """

    def __init__(self, n: int, vocab: Sequence[str] | str | None = None):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self.vocab = list(vocab) if vocab is not None else None
        self.counts_: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        self._memo: dict[str, np.ndarray] = {}

    def fit(self, text: str) -> NGramModel:
        """Count every k-gram, k = 1..n, of `text`."""
        if not text:
            raise EmptyInputError("cannot fit an n-gram model on empty text")
        if self.vocab is None:
            self.vocab = sorted(set(text))
        self.index_ = {c: i for i, c in enumerate(self.vocab)}
        self._check(text)
        self.counts_ = []
        for k in range(self.n):  # context length k
            grams = Counter(text[i : i + k + 1] for i in range(len(text) - k))
            table: dict[str, tuple[list[int], list[int]]] = {}
            for gram, count in grams.items():
                ids, cs = table.setdefault(gram[:-1], ([], []))
                ids.append(self.index_[gram[-1]])
                cs.append(count)
            self.counts_.append(
                {h: (np.array(ids), np.array(cs, dtype=float)) for h, (ids, cs) in table.items()}
            )
        self._memo = {}
        return self

    def _check(self, text: str) -> None:
        for t, ch in enumerate(text):
            if ch not in self.index_:
                raise UnknownCharacterError(ch, t, text=text, vocab_size=len(self.index_))

    def distribution(self, context: str) -> np.ndarray:
        """P(next character | the last n - 1 characters of `context`): [V], sums to one."""
        if not self.counts_:
            raise RuntimeError("fit the n-gram model first")
        h = context[len(context) - (self.n - 1) :] if self.n > 1 else ""
        if h in self._memo:
            return self._memo[h]
        p = np.full(len(self.vocab), 1.0 / len(self.vocab))  # [V]
        for k in range(len(h) + 1):
            ctx = h[len(h) - k :] if k else ""
            if ctx not in self.counts_[k]:
                continue  # unseen context: back off
            ids, cs = self.counts_[k][ctx]
            total, types = cs.sum(), len(ids)
            p = p * (types / (total + types))
            p[ids] += cs / (total + types)
        if len(self._memo) < 500_000:
            self._memo[h] = p
        return p

    def predict_proba(self, text: str) -> np.ndarray:
        """[pos, V]: row t is P(character t + 1 | text[: t + 1]), aligned with a model's logits."""
        self._check(text)
        return np.stack([self.distribution(text[max(0, t + 2 - self.n) : t + 1])
                         for t in range(len(text))])  # [pos, V]

    def correct_probs(self, text: str) -> np.ndarray:
        """[pos - 1]: probability given to each actual next character text[t + 1]."""
        self._check(text)
        out = np.empty(len(text) - 1)
        for t in range(len(text) - 1):
            ctx = text[max(0, t + 2 - self.n) : t + 1] if self.n > 1 else ""
            out[t] = self.distribution(ctx)[self.index_[text[t + 1]]]
        return out


def _words(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text))


def _word_at(text: str, t: int) -> str:
    """The word (\\w run) containing character t, or "" if t is not a word character."""
    if not (text[t].isalnum() or text[t] == "_"):
        return ""
    a = b = t
    while a > 0 and (text[a - 1].isalnum() or text[a - 1] == "_"):
        a -= 1
    while b + 1 < len(text) and (text[b + 1].isalnum() or text[b + 1] == "_"):
        b += 1
    return text[a : b + 1]


@dataclass
class ErrorAnalysis:
    """Per target position (characters 1..pos-1): model and n-gram probabilities, error category."""

    text: str
    p_model: np.ndarray  # [pos - 1] probability the model gave each next character
    p_ngram: np.ndarray  # [pos - 1] the same for the order-n n-gram
    category: np.ndarray  # [pos - 1] str: the error's category, "" where the model was right
    n: int

    @property
    def model_errors(self) -> np.ndarray:
        return self.p_model < ERROR_THRESHOLD

    @property
    def ngram_errors(self) -> np.ndarray:
        return self.p_ngram < ERROR_THRESHOLD

    def counts(self) -> Any:
        """DataFrame: category, errors, fraction of the model's errors (paper Fig. 6)."""
        import pandas as pd

        n_err = int(self.model_errors.sum())
        rows = [{"category": c, "errors": int((self.category == c).sum())}
                for c in ERROR_CATEGORIES]
        frame = pd.DataFrame(rows)
        frame["fraction"] = frame.errors / max(n_err, 1)
        frame["meaning"] = [ERROR_CATEGORIES[c] for c in frame.category]
        return frame

    def summary(self) -> dict[str, float]:
        """Error rates and the contingency of model vs n-gram errors."""
        m, g = self.model_errors, self.ngram_errors
        total = len(m)
        return {
            "positions": total,
            "model_error_rate": float(m.mean()),
            "ngram_error_rate": float(g.mean()),
            "model_right_ngram_wrong": int((~m & g).sum()),
            "model_wrong_ngram_right": int((m & ~g).sum()),
            "both_wrong": int((m & g).sum()),
            "model_nats_per_char": float(-np.log(np.maximum(self.p_model, 1e-12)).mean()),
            "ngram_nats_per_char": float(-np.log(np.maximum(self.p_ngram, 1e-12)).mean()),
        }


def error_analysis(
    text: str,
    model_probs: np.ndarray,
    train_text: str,
    vocab: Sequence[str],
    *,
    n: int = 5,
    memory_n: int = 5,
    rare_count: int = 5,
    ngrams: dict[int, NGramModel] | None = None,
) -> ErrorAnalysis:
    """Break the model's errors on `text` into the paper's categories (Fig. 6).

    `model_probs` [pos, V] is the model's next-character distribution (row t predicts
    character t + 1, e.g. from `next_char_probs`); the n-gram oracle uses orders 1..`n` fitted on
    `train_text`. Pass fitted `ngrams` {order: model} to reuse them.
    """
    if len(text) < 2:
        raise EmptyInputError("error analysis needs a text of at least two characters")
    model_probs = np.asarray(model_probs)
    if model_probs.shape != (len(text), len(vocab)):
        raise ValueError(
            f"model_probs has shape {model_probs.shape}, expected ({len(text)}, {len(vocab)})"
        )
    ngrams = dict(ngrams or {})
    for order in range(1, n + 1):
        if order not in ngrams:
            ngrams[order] = NGramModel(order, vocab).fit(train_text)
    index = {c: i for i, c in enumerate(vocab)}
    targets = np.array([index[c] for c in text[1:]])  # [pos - 1]
    p_model = model_probs[np.arange(len(text) - 1), targets]
    p_orders = {k: m.correct_probs(text) for k, m in ngrams.items()}  # each [pos - 1]
    oracle = np.max(np.stack([p_orders[k] for k in range(1, n + 1)]), axis=0) >= ERROR_THRESHOLD
    train_words = _words(train_text)
    rank2 = np.argsort(-model_probs[:-1], axis=1, kind="stable")[:, :2]  # [pos - 1, 2]
    category = np.full(len(text) - 1, "", dtype=object)
    seen: set[str] = set()
    for t in range(len(text) - 1):
        target = t + 1
        gram = text[max(0, target - memory_n + 1) : target + 1]
        if p_model[t] < ERROR_THRESHOLD:
            prev = text[t]
            ch = text[target]
            word = _word_at(text, target)
            if oracle[t]:
                cat = "ngram"
            elif len(gram) == memory_n and gram in seen:
                cat = "dynamic_memory"
            elif word and train_words[word] <= rare_count:
                cat = "rare_word"
            elif word and (prev.isspace() or prev in "\"'"):
                cat = "word_start"
            elif not ch.isalnum() and not ch.isspace():
                cat = "punctuation"
            elif targets[t] in rank2[t] or p_model[t] >= 0.25:
                cat = "boost"
            else:
                cat = "other"
            category[t] = cat
        if len(gram) == memory_n:
            seen.add(gram)
    return ErrorAnalysis(text, p_model, p_orders[n], category.astype(str), n)


_PAIRS = {")": "(", "]": "[", "}": "{"}
DISTANCE_BINS = (1, 6, 11, 21, 41, 81, 161)


def mean_interval(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (NaNs for none): how far a bin's mean
    could move with other brackets of the same kind."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(1)  # [n_boot]
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def long_range_analysis(
    analysis: ErrorAnalysis, language: str = "python", bins: Sequence[int] = DISTANCE_BINS,
    level: float = 0.95,
) -> tuple[Any, Any]:
    """Closing brackets by distance to their matching open bracket (paper Fig. 5).

    Returns (per-bracket DataFrame: position, char, distance, p_model, p_ngram; per-bin DataFrame,
    every bin kept, empty ones with NaN means: bracket count, mean probabilities with bootstrap
    `level` intervals (`*_lo`, `*_hi`), and the fraction the model got right where the n-gram did
    not). Brackets inside strings and comments are skipped.
    """
    import pandas as pd

    text = analysis.text
    lex = lexical_state(text, language)
    stack: list[tuple[str, int]] = []
    rows = []
    for t, ch in enumerate(text):
        if lex.in_string[t] or lex.in_comment[t]:
            continue
        if ch in "([{":
            stack.append((ch, t))
        elif ch in _PAIRS and stack and stack[-1][0] == _PAIRS[ch]:
            _, start = stack.pop()
            if t >= 1:
                rows.append({"position": t, "char": ch, "distance": t - start,
                             "p_model": analysis.p_model[t - 1], "p_ngram": analysis.p_ngram[t - 1]})
    per = pd.DataFrame(rows, columns=["position", "char", "distance", "p_model", "p_ngram"])
    edges = list(bins) + [np.inf]
    labels = [f"{a}-{int(b) - 1}" if np.isfinite(b) else f"{a}+" for a, b in
              zip(edges[:-1], edges[1:], strict=True)]
    per["bin"] = pd.cut(per.distance, edges, right=False, labels=labels)
    grouped = per.groupby("bin", observed=False)
    binned = pd.DataFrame({
        "brackets": grouped.size(),
        "p_model": grouped.p_model.mean(),
        "p_ngram": grouped.p_ngram.mean(),
        "model_right_ngram_wrong": grouped.apply(
            lambda g: float(((g.p_model >= ERROR_THRESHOLD) & (g.p_ngram < ERROR_THRESHOLD)).mean())
            if len(g) else np.nan, include_groups=False),
    }).reset_index()
    for column in ("p_model", "p_ngram"):
        bounds = [mean_interval(per.loc[per.bin == label, column].to_numpy(), level) for label in binned.bin]
        binned[f"{column}_lo"] = [lo for lo, _ in bounds]
        binned[f"{column}_hi"] = [hi for _, hi in bounds]
    return per, binned
