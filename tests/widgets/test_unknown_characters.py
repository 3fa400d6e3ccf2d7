"""The out-of-vocabulary advice works in the explorers: `unknown="map"` makes a text with a character
outside the vocabulary run, where the default shows the error (with that advice) inside the widget."""

from __future__ import annotations

import pytest

import workbench
from workbench.widgets.cells import CellExplorer
from workbench.widgets.implicit_attention import ImplicitAttentionExplorer
from workbench.widgets.lens import LensExplorer
from workbench.widgets.patching import PatchingExplorer

TEXT = "def f(x):\n    return '龍' + x"


@pytest.fixture(scope="module")
def model():
    return workbench.load("lstm-stdlib-2x128")


def explorers(model, **kwargs):
    return {
        "cells": lambda: CellExplorer(model, TEXT, **kwargs),
        "lens": lambda: LensExplorer(model, None, TEXT, **kwargs),
        "implicit attention": lambda: ImplicitAttentionExplorer(model, TEXT, **kwargs),
        "patching": lambda: PatchingExplorer(model, TEXT, TEXT.replace("(x)", "[x]"), answer=")", other="\n",
                                             **kwargs),
    }


@pytest.mark.parametrize("name", ["cells", "lens", "implicit attention", "patching"])
def test_unknown_map_runs_where_the_default_shows_the_advice(model, name):
    default = explorers(model)[name]()
    assert "U+9F8D" in default.error.value and "unknown=" in default.error.value, default.error.value[:300]
    mapped = explorers(model, unknown="map")[name]()
    assert mapped.error.value == "", mapped.error.value[:300]


def test_a_bad_unknown_rule_is_refused(model):
    with pytest.raises(ValueError, match="unknown must be 'error' or 'map'"):
        CellExplorer(model, TEXT, unknown="drop")
