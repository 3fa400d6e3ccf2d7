"""The PatchingExplorer live in JupyterLab: a real Chromium opens a notebook on localhost, runs it,
and clicks two cells of the explorer's heatmap (a plotly FigureWidget, drawn through anywidget); the
kernel answers each click with that patched run's prediction, shown under the heatmap. Screenshots:
test-artifacts/lab-patching-*.png."""

from __future__ import annotations

import json
import time

import pytest

from tests.browser.test_tour_in_jupyterlab import state, wait_for

pytestmark = pytest.mark.slow

CLEAN, CORRUPTED = "    x = max(a, b + c", "    x = max.a, b + c"
SOURCE = f"""import workbench
from workbench.widgets.patching import PatchingExplorer
model = workbench.load("lstm-stdlib-2x128")
explorer = PatchingExplorer(model, clean={CLEAN!r}, corrupted={CORRUPTED!r}, answer=")", other="\\n", hook="c")
explorer"""


def notebook(root):
    root.mkdir(parents=True, exist_ok=True)
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": SOURCE.splitlines(keepends=True)}
    nb = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "patching.ipynb").write_text(json.dumps(nb))


def selection(driver) -> str:
    """The explorer's prediction header, 'patched: layer L, position P:c ...', or ''."""
    return driver.execute_script(
        "const b = Array.from(document.querySelectorAll('.jupyter-widgets b'))"
        ".find(e => e.textContent.startsWith('patched: layer'));"
        "return b ? b.textContent : '';")


def test_clicking_the_widget_heatmap_in_jupyterlab_shows_that_cells_prediction(
        chromium, jupyterlab_factory, tmp_path, artifacts):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = chromium
    driver.set_window_size(1400, 1400)
    root = tmp_path / "lab-root"
    notebook(root)
    lab = jupyterlab_factory(root)
    try:
        driver.get(lab.open_url("patching.ipynb"))
        wait_for(driver, lambda d: (s := state(d)) and s["ready"] and s["kernel"] == "idle", 180,
                 "the notebook to open with an idle kernel")
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        wait_for(driver, lambda d: (s := state(d)) and s["done"] == s["code"] and s["kernel"] == "idle"
                 and not s["errors"] and s, 240, "the cell to run")
        area = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag"), 120,
                        "the explorer's heatmap (a FigureWidget) to draw")[0]
        first = wait_for(driver, selection, 60, "the explorer's initial selection")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", area)
        time.sleep(1.0)
        driver.save_screenshot(str(artifacts / "lab-patching-before.png"))
        width, height = area.size["width"], area.size["height"]
        seen = []
        for fx, fy in ((0.98, 0.25), (0.02, 0.75)):  # inside the top row's last column, the bottom row's first
            before = selection(driver)
            ActionChains(driver).move_to_element_with_offset(
                area, int((fx - 0.5) * width), int((fy - 0.5) * height)).click().perform()
            seen.append(wait_for(driver, lambda d, before=before: (s := selection(d)) != before and s, 60,
                                 "the kernel to answer the click with a new prediction", interval=0.3))
        top, bottom = seen
        length = len(CLEAN)
        assert top.startswith(f"patched: layer 1, position {length - 1}:"), (first, top)
        assert bottom.startswith("patched: layer 0, position 0:"), (first, bottom)
        assert not state(driver)["errors"]
        shown = driver.execute_script(
            "const b = Array.from(document.querySelectorAll('.jupyter-widgets b'))"
            ".find(e => e.textContent.startsWith('patched: layer'));"
            "return b.parentElement.textContent;")
        assert "next token" in shown and "prob" in shown, shown  # the top-k table under the header
        assert "Traceback" not in driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        driver.save_screenshot(str(artifacts / "lab-patching-after.png"))
    except BaseException:
        driver.save_screenshot(str(artifacts / "lab-patching-failure.png"))
        raise
