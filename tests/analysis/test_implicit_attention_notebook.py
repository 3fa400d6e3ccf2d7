"""notebooks/04_implicit_attention.ipynb runs top to bottom headless, in the time its header promises."""

from pathlib import Path

import pytest

from workbench.notebook_runner import execute_notebook, stated_seconds

pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_implicit_attention.ipynb"


@pytest.mark.notebook
@pytest.mark.slow
def test_implicit_attention_notebook_runs_top_to_bottom_within_its_stated_time():
    nb, elapsed = execute_notebook(NOTEBOOK, timeout=120)
    limit = stated_seconds(NOTEBOOK)  # what the notebook's **Time:** paragraph promises
    assert elapsed <= limit, f"the notebook took {elapsed:.0f} s; its header states {limit:.0f} s"
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "upper triangles exactly zero: True" in text
    assert "notebook ran in" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 4  # three maps and the perturbation curves
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert 'data-query="1"' in html  # the query rows over the text rendered
