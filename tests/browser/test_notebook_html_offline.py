"""Every notebook's HTML page, as `jupyter nbconvert --to html` writes it from the executed notebook,
opened in headless Chromium with no network (every request off the machine goes to a dead proxy):
it draws as many plotly figures as the notebook holds, from the plotly.js embedded once in the page,
and every widget's static copy shows. Screenshots: test-artifacts/html-<notebook>.png.

The executed notebooks come from the shared `jupyter nbconvert --to notebook --execute` run of this
test run (tests/notebooks/standard_runners.py), so nothing executes twice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.notebooks.standard_runners import executed_by_nbconvert
from workbench.notebook_runner import notebooks_dir

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"
DRAWN_JS = ("return Array.from(document.querySelectorAll('.plotly-graph-div'))"
            ".filter(d => d.querySelector('.main-svg')).length")


def expected_in_page(executed: Path) -> dict[str, int]:
    """From the executed notebook: the plotly figures it outputs (each with an HTML copy), the
    figures inside widgets' static copies, the widgets, and every figure div the page will hold."""
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    html = [o.get("data", {}).get("text/html", "") for o in outputs if WIDGET_VIEW not in o.get("data", {})]
    html = [h if isinstance(h, str) else "".join(h) for h in html]
    fallbacks = [h for h in html if h.startswith('<div class="wb-static-fallback')]
    # The explorers (a VBox each); tqdm's progress bars (an HBox) are progress, not content.
    explorers = [o for o in outputs if WIDGET_VIEW in o.get("data", {})
                 and str(o["data"].get("text/plain", "")).startswith("VBox(")]
    return {
        "figures": sum(PLOTLY in o.get("data", {}) for o in outputs),
        "widget_figures": sum(h.count('class="plotly-graph-div"') for h in fallbacks),
        "widgets": len(explorers),
        "fallbacks": len(fallbacks),
        "divs": sum(h.count('class="plotly-graph-div"') for h in html),
        "plotlyjs": sum(h.count("window.Plotly = Plotly") for h in html),
    }


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_exported_html_draws_every_figure_offline(notebook: Path, offline_chromium, artifacts, tmp_path):
    from selenium.webdriver.common.by import By

    executed = executed_by_nbconvert(notebook)
    subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "html", str(executed),
                    "--output-dir", str(tmp_path)], check=True, capture_output=True, timeout=300)
    page = tmp_path / f"{notebook.stem}.html"
    want = expected_in_page(executed)
    assert want["plotlyjs"] == 1, f"plotly.js must be inline exactly once per page, found {want['plotlyjs']}"
    assert want["divs"] == want["figures"] + want["widget_figures"]  # every figure output has its HTML copy
    assert want["fallbacks"] == want["widgets"], "every widget needs its static copy"

    driver = offline_chromium
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + 90
    drawn = 0
    while time.monotonic() < deadline:
        drawn = driver.execute_script(DRAWN_JS)
        if drawn >= want["divs"]:
            break
        time.sleep(0.5)
    driver.save_screenshot(str(artifacts / f"html-{notebook.stem}.png"))
    assert driver.execute_script("return typeof window.Plotly") == "object"
    assert drawn == want["divs"], f"{notebook.name}: {drawn} of {want['divs']} figures drawn offline"
    shown = [e for e in driver.find_elements(By.CSS_SELECTOR, ".wb-static-fallback")
             if e.size["height"] > 0 and e.is_displayed()]
    assert len(shown) == want["widgets"], f"{len(shown)} of {want['widgets']} widget copies visible"
    # Nothing outside the machine was reached: resources came from the file itself or failed.
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.responseEnd > 0 && e.transferSize > 0)"
        ".map(e => e.name)")
    assert all(u.split(":", 1)[0] in ("file", "data", "blob") for u in loaded), loaded
