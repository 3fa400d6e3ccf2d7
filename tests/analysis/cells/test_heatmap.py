"""Text heatmaps: one coloured span per character, escaped text, lines wrapped like source code."""

import re

import numpy as np
import pytest

from workbench.analysis.cells import cell_heatmap, heatmap_grid, planted_lstm, text_heatmap
from workbench.analysis.heatmap import color_of
from workbench.errors import EmptyInputError

SPAN = re.compile(r'<span class="wb-c" style="background:(rgb\(\d+,\d+,\d+\))[^"]*" title="[^"]*">'
                  r"([^<]*)</span>")


def spans(html: str) -> list[tuple[str, str]]:
    return SPAN.findall(html)


def test_one_coloured_span_per_character_including_newlines():
    text = "ab\ncd\n\nefg"
    found = spans(text_heatmap(text, np.arange(len(text), dtype=float)).html)
    assert len(found) == len(text)
    assert [s for _, s in found][2] == "↵"


def test_colour_follows_the_value_on_the_diverging_map():
    found = spans(text_heatmap("xyz", [-1.0, 0.0, 1.0]).html)
    assert [c for c, _ in found] == [color_of(0.0), color_of(0.5), color_of(1.0)]
    assert found[1][0] == "rgb(247,247,247)"  # zero is white


def test_html_special_characters_in_the_text_are_escaped():
    text = "<b>&\"'</b>"
    html = text_heatmap(text, np.zeros(len(text))).html
    found = spans(html)
    assert len(found) == len(text)
    assert [s for _, s in found] == ["&lt;", "b", "&gt;", "&amp;", "&quot;", "&#x27;", "&lt;",
                                     "/", "b", "&gt;"]
    assert "<b>" not in html


def test_long_lines_wrap_and_newlines_start_numbered_lines():
    text = "x" * 25 + "\n" + "y" * 5
    html = text_heatmap(text, np.ones(len(text)), wrap=10).html
    lines = re.findall(r'<div class="wb-line".*?</div>', html)
    # 26 characters of line 1 (25 x and the newline) wrap into 10 + 10 + 6; line 2 has 5
    assert [len(spans(line)) for line in lines] == [10, 10, 6, 5]
    assert ">↪<" in lines[1] and ">2<" in lines[3]


def test_wrong_lengths_and_empty_text_raise():
    with pytest.raises(ValueError, match="3 values for 2 characters"):
        text_heatmap("ab", [1, 2, 3])
    with pytest.raises(EmptyInputError):
        text_heatmap("", [])


def test_grid_holds_one_heatmap_per_unit():
    html = heatmap_grid("abc", {"u0": np.zeros(3), "u1": np.ones(3)}).html
    assert len(spans(html)) == 6 and "u0" in html and "u1" in html


def test_cell_heatmap_of_the_planted_bracket_cell_is_red_inside_brackets():
    model = planted_lstm()
    heat = cell_heatmap(model, "a(b(c))d", layer=0, quantity="c", unit=0)
    colours = [c for c, _ in spans(heat._repr_html_())]
    assert colours[0] == colours[-1] == "rgb(247,247,247)"  # depth 0: white
    assert colours[4] == color_of(1.0)  # depth 2, the maximum: full red
