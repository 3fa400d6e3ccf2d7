"""Widgets' static copies (workbench.widgets.static), the offline plotly renderer
(workbench.offline_figures), and the rule that keeps nbclient from stalling: a widget never makes the
front end write captured output back to the kernel while a cell runs (docs/design.md, "Standard
runners")."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from workbench.offline_figures import RENDERER, figure_html, notebook_setup
from workbench.widgets.display import set_outputs
from workbench.widgets.static import FALLBACK_CLASS, fallback_html, static_html


def test_static_html_holds_panes_figures_tabs_and_control_values():
    figure = go.Figure(go.Scatter(x=[0, 1], y=[2, 3]), layout={"height": 300})
    plot = widgets.Output()
    set_outputs(plot, figure, "a printed line")
    tabs = widgets.Tab(children=[widgets.HTML("<b>ranking</b>"), plot])
    tabs.set_title(0, "feature ranking")
    tabs.set_title(1, "gate saturation")
    box = widgets.VBox([widgets.Dropdown(options=["a", "b"], value="b", description="layer"), tabs])
    page = static_html(box)
    assert "<b>layer</b>: b" in page
    assert "<h4>feature ranking</h4><b>ranking</b>" in page and "<h4>gate saturation</h4>" in page
    assert page.count('class="plotly-graph-div"') == 1 and "height:300px" in page
    assert "<pre>a printed line\n</pre>" in page


def test_the_fallback_is_marked_for_the_live_widget_and_leaves_out_the_style_that_hides_it():
    box = widgets.VBox([widgets.HTML("visible"),
                        widgets.HTML("<style>.x{display:none}</style>", layout=widgets.Layout(display="none"))])
    page = fallback_html(box)
    assert page.startswith(f'<div class="{FALLBACK_CLASS} wb-static-{box.model_id}">')
    assert "visible" in page and "<style>" not in page


def test_figure_html_cannot_close_its_script_early():
    figure = go.Figure(go.Bar(x=["</script><b>x"], y=[1]))
    page = figure_html(figure)
    assert page.count("</script>") == 1 and "<\\/script>" in page


def test_notebook_setup_keeps_the_mimetype_and_adds_an_inline_html_copy_without_a_cdn(capsys):
    previous = pio.renderers.default
    try:
        notebook_setup()
        assert pio.renderers.default == f"plotly_mimetype+{RENDERER}"
        bundle = go.Figure(go.Scatter(x=[0], y=[1]))._repr_mimebundle_()
        assert "application/vnd.plotly.v1+json" in bundle
        assert "window.Plotly.newPlot" in bundle["text/html"] and "cdn" not in bundle["text/html"].lower()
        assert pio.renderers[RENDERER].embedded
    finally:
        pio.renderers.default = previous


@pytest.mark.slow
@pytest.mark.notebook
def test_explorers_make_no_front_end_write_back_while_a_cell_runs(tmp_path):
    """nbclient, as a front end, answers an Output widget filled by `with out:` with comm messages on
    the shell socket it is polling for the cell's reply: the path that lost replies. The explorers fill
    their Outputs from the kernel, so it sends none; the control cell shows the count can be non-zero."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    cells = [
        "import ipywidgets as w\nimport workbench\nfrom workbench.widgets.cells import CellExplorer\n"
        "from workbench.widgets.steering import SteeringExplorer\nmodel = workbench.load('lstm-stdlib-2x128')",
        "CellExplorer(model, 'def f(x):\\n    return (x + 1)\\n')",
        "SteeringExplorer(model, 'open_quote', max_new_tokens=8)",
        "out = w.Output()\ndisplay(out)\nwith out:\n    print('captured by the front end')",  # the control
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    sent: list[tuple[int, str]] = []
    current = {"now": -1}

    def _set(index: int) -> None:
        current["now"] = index

    def count_sends(**_):
        send = client.kc.shell_channel.send

        def recording(msg):
            sent.append((current["now"], msg["header"]["msg_type"]))
            return send(msg)

        client.kc.shell_channel.send = recording

    client.on_notebook_start = count_sends
    client.on_cell_start = lambda cell, cell_index: _set(cell_index)
    client.execute()
    write_backs = [(i, t) for i, t in sent if t == "comm_msg"]
    assert [i for i, _ in write_backs if i in (1, 2)] == [], write_backs
    assert [i for i, _ in write_backs if i == 3], "the control cell should make nbclient write back"
