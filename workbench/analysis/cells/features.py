"""Hypothesis features computed from the text alone, one value per character.

The features Karpathy, Johnson & Fei-Fei 2015 found cells for (section 4.1, Fig. 2: inside quotes,
inside a comment, bracket depth, indentation, position in line) and more, each the value *after*
reading character t, so it lines up with the cell state at t. A user adds their own as a callable
`text -> [pos]`, an array, or a regular expression (`regex_feature`).
"""

from __future__ import annotations

import difflib
import functools
import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import EmptyInputError

__all__ = [
    "FEATURES",
    "Feature",
    "LexicalState",
    "compute_features",
    "lexical_state",
    "regex_feature",
]

FeatureFn = Callable[[str], np.ndarray]
FeatureSpec = str | FeatureFn | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class Feature:
    """A named hypothesis: `fn(text)` gives [pos] values; `kind` is "binary" or "count"."""

    name: str
    fn: FeatureFn
    kind: str
    description: str

    def __call__(self, text: str) -> np.ndarray:
        return np.asarray(self.fn(text), dtype=float)


@dataclass(frozen=True)
class LexicalState:
    """Per character [pos]: inside a string, a triple-quoted string, a comment; code depth."""

    in_string: np.ndarray
    in_triple: np.ndarray
    in_comment: np.ndarray
    bracket_depth: np.ndarray
    paren_depth: np.ndarray


_OPEN, _CLOSE = "([{", ")]}"


@functools.lru_cache(maxsize=8)
def lexical_state(text: str, language: str = "python") -> LexicalState:
    """A small lexer: string, comment and bracket state after each character.

    Python: `#` comments, '...' "..." and triple-quoted strings with backslash escapes.
    C: `//` and `/* */` comments, "..." strings and '.' character literals. Brackets inside
    strings and comments do not count towards the depth; the depth never goes below 0.
    """
    if language not in ("python", "c"):
        raise ValueError(f"unknown language {language!r}; use 'python' or 'c'")
    n = len(text)
    in_string = np.zeros(n)
    in_triple = np.zeros(n)
    in_comment = np.zeros(n)
    depth = np.zeros(n)
    paren = np.zeros(n)
    mode, delim, escape = "code", "", False
    d = p = 0
    t = 0
    while t < n:
        ch = text[t]
        step = 1
        if mode == "code":
            if language == "python" and ch == "#":
                mode = "comment"
            elif language == "c" and text.startswith("//", t):
                mode, step = "comment", 2
            elif language == "c" and text.startswith("/*", t):
                mode, step = "block", 2
            elif ch in "\"'":
                triple = language == "python" and text.startswith(ch * 3, t)
                mode, delim, escape = "string", ch * 3 if triple else ch, False
                step = len(delim)
            elif ch in _OPEN:
                d += 1
                p += ch == "("
            elif ch in _CLOSE:
                d = max(d - 1, 0)
                p = max(p - (ch == ")"), 0)
        elif mode == "string":
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif text.startswith(delim, t):
                mode, step = "code", len(delim)
            elif ch == "\n" and len(delim) == 1:
                mode = "code"  # an unterminated one-line string ends at the line's end
        elif mode == "comment":
            if ch == "\n":
                mode = "code"
        elif mode == "block" and text.startswith("*/", t):
            mode, step = "code", 2
        end = min(t + step, n)
        in_string[t:end] = mode == "string"
        in_triple[t:end] = mode == "string" and len(delim) == 3
        in_comment[t:end] = mode in ("comment", "block")
        depth[t:end], paren[t:end] = d, p
        t = end
    return LexicalState(in_string, in_triple, in_comment, depth, paren)


def _line_starts(text: str) -> np.ndarray:
    """[pos]: index of the newline that last preceded-or-is character t (-1 before the first)."""
    is_nl = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord("\n")
    idx = np.where(is_nl, np.arange(len(text)), -1)
    return np.maximum.accumulate(idx)


def position_in_line(text: str) -> np.ndarray:
    """Characters read on the current line: 0 at a newline, 1 at a line's first character."""
    return (np.arange(len(text)) - _line_starts(text)).astype(float)


def distance_to_line_end(text: str) -> np.ndarray:
    """Characters from t to the next newline (0 at a newline; the text's end counts as one)."""
    n = len(text)
    is_nl = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord("\n")
    nxt = np.where(is_nl, np.arange(n), n)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]  # [pos]: next newline at or after t
    return (nxt - np.arange(n)).astype(float)


def indent_depth(text: str, tab: int = 4) -> np.ndarray:
    """Leading-whitespace columns of the current line read so far (tabs count `tab`)."""
    out = np.zeros(len(text))
    indent, leading = 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            indent, leading = 0, True
        elif leading and ch in " \t":
            indent += tab if ch == "\t" else 1
        else:
            leading = False
        out[t] = indent
    return out


def _char_class(predicate: Callable[[str], bool]) -> FeatureFn:
    return lambda text: np.array([float(predicate(c)) for c in text])


_KEYWORDS = "|".join(sorted(keyword.kwlist, key=len, reverse=True))


def regex_feature(pattern: str, flags: int = 0) -> FeatureFn:
    """A binary feature: 1 on every character inside a match of `pattern`."""
    compiled = re.compile(pattern, flags)

    def fn(text: str) -> np.ndarray:
        out = np.zeros(len(text))
        for m in compiled.finditer(text):
            out[m.start() : m.end()] = 1.0
        return out

    return fn


def _word_position(text: str) -> np.ndarray:
    """Characters read of the current identifier/word (0 outside words)."""
    out = np.zeros(len(text))
    run = 0
    for t, ch in enumerate(text):
        run = run + 1 if (ch.isalnum() or ch == "_") else 0
        out[t] = run
    return out


def _builtin() -> dict[str, Feature]:
    lex = lexical_state
    feats = [
        Feature("in_string", lambda s: lex(s).in_string, "binary",
                "inside a string literal (quote cell, paper Fig. 2)"),
        Feature("in_docstring", lambda s: lex(s).in_triple, "binary",
                "inside a triple-quoted string"),
        Feature("in_comment", lambda s: lex(s).in_comment, "binary", "inside a # comment"),
        Feature("bracket_depth", lambda s: lex(s).bracket_depth, "count",
                "nesting depth of ( [ { in code (paper Fig. 2: bracket cell)"),
        Feature("paren_depth", lambda s: lex(s).paren_depth, "count", "nesting depth of ( in code"),
        Feature("indent_depth", indent_depth, "count",
                "leading-whitespace columns of the current line (paper Fig. 2: indentation cell)"),
        Feature("position_in_line", position_in_line, "count",
                "characters read on the current line (paper Fig. 2: line-length cell)"),
        Feature("distance_to_line_end", distance_to_line_end, "count",
                "characters left before the next newline"),
        Feature("word_position", _word_position, "count",
                "characters read of the current identifier"),
        Feature("after_def_or_class", regex_feature(r"(?:(?<=\bdef )|(?<=\bclass ))\w+"), "binary",
                "in the name being defined after `def` or `class`"),
        Feature("in_keyword", regex_feature(rf"\b(?:{_KEYWORDS})\b"), "binary",
                "inside a Python keyword"),
        Feature("is_whitespace", _char_class(str.isspace), "binary", "the character is whitespace"),
        Feature("is_newline", _char_class(lambda c: c == "\n"), "binary", "the character is \\n"),
        Feature("is_alpha", _char_class(str.isalpha), "binary", "the character is a letter"),
        Feature("is_digit", _char_class(str.isdigit), "binary", "the character is a digit"),
        Feature("is_upper", _char_class(str.isupper), "binary", "the character is upper-case"),
        Feature("is_punctuation", _char_class(lambda c: not c.isalnum() and not c.isspace()),
                "binary", "the character is punctuation"),
    ]
    return {f.name: f for f in feats}


FEATURES: dict[str, Feature] = _builtin()


def _lookup(name: str) -> Feature:
    if name not in FEATURES:
        close = difflib.get_close_matches(name, list(FEATURES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(
            f"unknown feature {name!r}{hint} (built-in features: {', '.join(FEATURES)}; or pass "
            "a callable text -> [pos], an array, or regex_feature(pattern))"
        )
    return FEATURES[name]


def compute_features(
    text: str, features: Sequence[str] | Mapping[str, FeatureSpec] | None = None
) -> dict[str, np.ndarray]:
    """name -> [pos] float values for each hypothesis (default: every built-in feature).

    `features` is a list of built-in names, or a mapping of name -> built-in name, callable
    `text -> [pos]`, or array [pos].
    """
    if not isinstance(text, str) or not text:
        raise EmptyInputError("the text is empty: features need at least one character")
    if features is None:
        features = list(FEATURES)
    items = features.items() if isinstance(features, Mapping) else [(f, f) for f in features]
    out: dict[str, np.ndarray] = {}
    for name, spec in items:
        if isinstance(spec, str):
            values = _lookup(spec)(text)
        elif callable(spec):
            values = np.asarray(spec(text), dtype=float)
        else:
            values = np.asarray(spec, dtype=float)
        values = values.reshape(-1)
        if values.shape[0] != len(text):
            raise ValueError(
                f"feature {name!r} gave {values.shape[0]} values for {len(text)} characters"
            )
        out[str(name)] = values
    if not out:
        raise ValueError("no features given")
    return out


def feature_kind(name: str, values: np.ndarray) -> str:
    """"binary" for a built-in binary feature or any 0/1-valued array, else "count"."""
    if name in FEATURES:
        return FEATURES[name].kind
    uniq = np.unique(values)
    return "binary" if uniq.size <= 2 and set(uniq.tolist()) <= {0.0, 1.0} else "count"
