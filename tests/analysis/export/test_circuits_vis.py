"""CircuitsVis export: the rendered views carry the same numbers and colour ranges as our plotly
figures (their z data), render offline, and refuse maps CircuitsVis cannot draw."""

import json
import re
import sys

import numpy as np
import pytest

from workbench.analysis.cells import planted_lstm
from workbench.analysis.cells.figures import units_heatmap_figure
from workbench.analysis.cells.recording import record
from workbench.analysis.export.circuits_vis import require_circuitsvis
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.figures import map_figure

TEXT = "f(a, (b))\n  g((c)) ((d))"


def _circuitsvis():
    return pytest.importorskip(
        "circuitsvis", reason="circuitsvis is not installed (pip install 'recurrent-workbench[circuitsvis]')"
    )


@pytest.fixture(scope="module")
def model():
    return planted_lstm(n_layers=2)


@pytest.fixture(scope="module")
def recording(model):
    return record(model, TEXT, ["c", "f", "h"])


def _rendered_props(view, component):
    """The props object the rendered HTML hands to the CircuitsVis component (what the page draws)."""
    match = re.search(rf"CircuitsVis\.{component},\s*(\{{.*\}})\s*\)\s*</script>\s*$", view.local_src, re.DOTALL)
    assert match, f"no {component} call in the rendered HTML"
    return json.loads(match.group(1))


def test_one_unit_has_the_figures_numbers_and_colour_range(recording):
    _circuitsvis()
    from workbench.analysis.export.circuits_vis import colored_tokens

    for quantity, squash in (("c", False), ("c", True), ("f", False)):
        view = colored_tokens(recording, 1, quantity, 2, squash=squash)
        figure = units_heatmap_figure(recording, [(1, quantity, 2)], squash=squash)
        heat = figure.data[0]
        props = _rendered_props(view, "ColoredTokens")
        assert props["tokens"] == list(TEXT)
        np.testing.assert_array_equal(np.asarray(props["values"]), np.asarray(heat.z, dtype=np.float64)[0])
        assert (props["minValue"], props["maxValue"]) == (heat.zmin, heat.zmax)
        expected = np.tanh(recording.unit(1, quantity, 2)) if squash else recording.unit(1, quantity, 2)
        np.testing.assert_array_equal(np.asarray(props["values"]), expected.astype(np.float64))
    assert (props["minValue"], props["maxValue"]) == (0.0, 1.0)  # a gate: 0..1, as the heatmap draws it


def test_several_units_are_the_transpose_of_the_figures_z(recording):
    _circuitsvis()
    from workbench.analysis.export.circuits_vis import colored_tokens_multi

    units = [(0, "c", 0), (1, "h", 3), (1, "f", 1)]
    view = colored_tokens_multi(recording, units)
    heat = units_heatmap_figure(recording, units).data[0]
    props = _rendered_props(view, "ColoredTokensMulti")
    np.testing.assert_array_equal(np.asarray(props["values"]), np.asarray(heat.z, dtype=np.float64).T)
    assert props["labels"] == list(heat.y) == ["L0 c[0]", "L1 h[3]", "L1 f[1]"]


@pytest.fixture(scope="module")
def attention(model):
    return implicit_attention(model, TEXT, layer=1)


def test_attention_heads_have_the_map_figures_numbers(model, attention):
    _circuitsvis()
    from workbench.analysis.export.circuits_vis import attention_heads

    chars = list(TEXT)
    view = attention_heads(attention, chars)
    props = _rendered_props(view, "AttentionHeads")
    heat = map_figure(attention, chars).data[0]
    z = np.asarray(heat.z, dtype=np.float64)  # [query, key], NaN above the diagonal
    head = np.asarray(props["attention"])[0]
    np.testing.assert_array_equal(head[np.isfinite(z)], z[np.isfinite(z)])
    assert (head[~np.isfinite(z)] == 0).all() and (~np.isfinite(z) == np.triu(np.ones_like(z), 1).astype(bool)).all()
    assert props["maskUpperTri"] is True and props["tokens"] == chars
    assert (props["minValue"], props["maxValue"]) == (heat.zmin, heat.zmax)
    assert props["attentionHeadNames"] == ["mean over channels"]

    channels = attention_heads(attention, chars, channels=[0, 3])
    props = _rendered_props(channels, "AttentionHeads")
    assert props["attentionHeadNames"] == ["channel 0", "channel 3"]
    for head, channel in zip(np.asarray(props["attention"]), (0, 3), strict=True):
        z = np.asarray(map_figure(attention, chars, channel=channel).data[0].z, dtype=np.float64)
        np.testing.assert_array_equal(head[np.isfinite(z)], z[np.isfinite(z)])


def test_the_view_renders_offline_and_saves_a_page(recording, tmp_path):
    circuitsvis = _circuitsvis()
    from workbench.analysis.export.circuits_vis import colored_tokens

    view = colored_tokens(recording, 0, "c", 1)
    assert view._repr_html_() == view.local_src == str(view)
    assert "unpkg.com" not in view.local_src and "CircuitsVis.render(" in view.local_src
    assert f"circuitsvis@{circuitsvis.__version__}" in view.cdn_src
    page = view.save(tmp_path / "unit.html").read_text()
    assert page.startswith("<!doctype html>") and view.local_src in page


def test_maps_circuitsvis_cannot_draw_are_refused(model, attention):
    _circuitsvis()
    from workbench.analysis.export.circuits_vis import attention_heads

    rows = implicit_attention(model, TEXT, layer=1, queries=[3, 5])
    with pytest.raises(ValueError, match=r"query rows \[3, 5\] of 24.*queries=None"):
        attention_heads(rows, list(TEXT))
    with pytest.raises(ValueError, match="tokens: 3 given for a map over 24 positions"):
        attention_heads(attention, list("abc"))
    mean = implicit_attention(model, TEXT, layer=1, aggregate="mean")
    with pytest.raises(ValueError, match="channels= needs per-channel maps.*'mean'"):
        attention_heads(mean, list(TEXT), channels=[0])
    with pytest.raises(IndexError, match="channel index 99 out of range"):
        attention_heads(attention, list(TEXT), channels=[99])


def test_without_circuitsvis_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "circuitsvis", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"recurrent-workbench\[circuitsvis\]"):
        require_circuitsvis()


def test_the_units_figure_draws_what_the_cell_heatmap_draws(recording):
    heat = units_heatmap_figure(recording, [(0, "c", 1), (1, "c", 0)]).data[0]
    np.testing.assert_array_equal(np.asarray(heat.z)[1], recording.unit(1, "c", 0))
    bound = float(np.abs(np.asarray(heat.z)).max())
    assert (heat.zmin, heat.zmax) == (-bound, bound)  # diverging, symmetric at the largest |c| shown
