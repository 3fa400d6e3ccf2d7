"""The tour in a real browser: JupyterLab on localhost, headless Debian Chromium, every cell run, the
widgets drawn and live (a slider change redraws a plot; the MIPS explorer's button runs a search,
showing its busy state meanwhile), no cell showing an error. Screenshots go to test-artifacts/
(tour-top.png, tour-cells-widget.png, tour-implicit-attention-widget.png, tour-steering-widget.png,
tour-lens-widget-before.png, tour-lens-widget-after.png, tour-mips-widget.png, tour-mips-busy.png,
and tour-failure.png when something goes wrong)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from workbench.notebook_runner import notebooks_dir

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 420  # the tour states 1–2 minutes; the browser, the server and a cold kernel add more

# Progress of the open notebook, read from JupyterLab's own models (exposed with
# --LabApp.expose_app_in_browser): cells run, cells waiting, error outputs, the kernel's status.
NOTEBOOK_STATE_JS = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) { return null; }
const session = panel.sessionContext.session;
const kernel = session && session.kernel ? session.kernel.status : "none";
const cells = panel.content.model.cells;
let code = 0, done = 0, errors = [];
for (let i = 0; i < cells.length; i++) {
  const cell = cells.get(i);
  if (cell.type !== "code") { continue; }
  code += 1;
  if (cell.executionCount !== null && cell.executionCount !== undefined) { done += 1; }
  for (let j = 0; j < cell.outputs.length; j++) {
    const out = cell.outputs.get(j).toJSON();
    if (out.output_type === "error") { errors.push({cell: i, ename: out.ename, evalue: out.evalue}); }
  }
}
return {kernel: kernel, code: code, done: done, errors: errors,
        ready: panel.sessionContext.isReady, dirtyTitle: document.title};
"""


def tour_copy(root: Path) -> Path:
    """A copy of the tour in `root`, so the browser session never writes into the repository.
    WORKBENCH_TOUR_MODEL names another model to run it on (a checkpoint directory, for development)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / "00_tour.ipynb"
    shutil.copy(notebooks_dir() / "00_tour.ipynb", target)
    other = os.environ.get("WORKBENCH_TOUR_MODEL")
    if other:
        text = target.read_text().replace('\\"lstm-stdlib-2x128\\"', json.dumps(json.dumps(other))[1:-1])
        target.write_text(text)
    return target


def wait_for(driver, predicate, timeout: float, what: str, interval: float = 1.0):
    """Poll `predicate(driver)` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate(driver)
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def state(driver) -> dict | None:
    return driver.execute_script(NOTEBOOK_STATE_JS)


def lens_widget(driver):
    """The LensExplorer's box: the widget VBox holding a slider labelled 'position'."""
    return driver.execute_script("""
        for (const label of document.querySelectorAll('.widget-slider .widget-label')) {
          if (label.textContent.trim() === 'position') {
            return {slider: label.closest('.widget-slider'), box: label.closest('.widget-vbox')};
          }
        }
        return null;""")


def plot_titles(driver, box) -> list[str]:
    return driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.js-plotly-plot .gtitle'))"
        ".map(e => e.textContent);", box)


def shot(driver, element, path: Path) -> None:
    """Scroll `element` into view and save a screenshot of the window."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
    time.sleep(1.0)  # let plotly finish its transition
    driver.save_screenshot(str(path))


def test_tour_runs_in_jupyterlab_with_live_widgets_and_no_error(
    chromium, jupyterlab_factory, tmp_path, artifacts
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = chromium
    driver.set_window_size(1400, 1800)
    root = tmp_path / "lab-root"
    tour_copy(root)
    lab = jupyterlab_factory(root)
    try:
        driver.get(lab.open_url("00_tour.ipynb"))
        wait_for(driver, lambda d: (s := state(d)) and s["ready"] and s["kernel"] == "idle", 180,
                 "the tour to open with an idle kernel")
        assert state(driver)["code"] >= 10, "the tour opened with too few code cells"
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        started = time.monotonic()

        def finished(d):
            s = state(d)
            assert not s["errors"], f"a tour cell raised: {s['errors'][0]}"
            return s if s["done"] == s["code"] and s["kernel"] == "idle" else None

        final = wait_for(driver, finished, RUN_TIMEOUT_S, "every tour cell to run", interval=2.0)
        print(f"tour ran in JupyterLab in {time.monotonic() - started:.0f} s: {final}")

        # No cell shows an error: no error output in the model, no traceback or widget failure on screen.
        page = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        # (the texts shown can be Python source that mentions tracebacks: look for a real one)
        assert "Traceback (most recent call last)" not in page and "Error displaying widget" not in page
        stderr = driver.find_elements(
            By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert not [e.text for e in stderr if "Error" in e.text], "a cell printed an error"
        driver.execute_script("document.querySelector('.jp-WindowedPanel-outer, .jp-Notebook')"
                              ".scrollTop = 0;")
        driver.save_screenshot(str(artifacts / "tour-top.png"))

        # Widgets rendered: ipywidgets views exist, the cell explorer drew its text heatmap.
        widgets = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jupyter-widgets.widget-vbox"),
                           60, "widget views in the page")
        assert len(widgets) >= 2
        # One output per explorer (cells, lens, implicit attention, steering, MIPS), none showing an
        # error and none left busy.
        explorers = driver.execute_script(
            "return Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
            ".filter(o => o.querySelector('.jupyter-widgets.widget-vbox'));")
        assert len(explorers) >= 5, f"expected the five explorers, found {len(explorers)} widget outputs"
        assert not driver.find_elements(By.CSS_SELECTOR, ".jupyter-widgets .wb-busy"), "a widget is still busy"
        widget_errors = driver.find_elements(By.CSS_SELECTOR, '.jupyter-widgets [style*="b00020"]')
        assert not widget_errors, f"a widget shows an error: {widget_errors[0].text}"
        for name, explorer in zip(("implicit-attention", "steering"), explorers[2:4], strict=True):
            shot(driver, explorer, artifacts / f"tour-{name}-widget.png")
        heat = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jupyter-widgets .wb-c"), 60,
                        "the CellExplorer's heatmap")
        shot(driver, heat[0].find_element(By.XPATH, "./ancestor::div[contains(@class,'widget-vbox')][1]"),
             artifacts / "tour-cells-widget.png")

        # The lens explorer responds to its position slider by redrawing its top-k plot.
        found = wait_for(driver, lens_widget, 60, "the LensExplorer's position slider")
        box, slider = found["box"], found["slider"]
        wait_for(driver, lambda d: any("position" in t for t in plot_titles(d, box)), 60,
                 "the LensExplorer's plots")
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        before_value = int(readout.text)
        before = plot_titles(driver, box)
        shot(driver, box, artifacts / "tour-lens-widget-before.png")
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        driver.execute_script("arguments[0].focus();", handle)
        handle.send_keys(Keys.ARROW_LEFT if before_value > 0 else Keys.ARROW_RIGHT)
        after_value = wait_for(driver, lambda d: (v := int(readout.text)) != before_value and str(v), 30,
                               "the slider's readout to change")
        expected = f"position {after_value}"
        after = wait_for(driver, lambda d: (t := plot_titles(d, box)) != before
                         and any(expected in x for x in t) and t, 60,
                         f"a plot titled '{expected}' after the slider moved")
        assert any(f"position {before_value}" in t for t in before)
        shot(driver, box, artifacts / "tour-lens-widget-after.png")
        assert not state(driver)["errors"]
        print(f"slider {before_value} -> {readout.text}; plots {before} -> {after}")

        # The MIPS explorer shows the tour's GRU's program; its button runs a whole search, during
        # which the button is disabled and says so and a spinner turns; then all is back, with a program.
        mips = explorers[4]
        assert "def program" in mips.text and "verified" in mips.text, mips.text[:500]
        shot(driver, mips, artifacts / "tour-mips-widget.png")
        button = mips.find_element(By.CSS_SELECTOR, "button.widget-button")
        label = button.text
        button.click()
        wait_for(driver, lambda d: not button.is_enabled() and "searching" in button.text, 30,
                 "the MIPS button to show its busy state", interval=0.1)
        assert mips.find_elements(By.CSS_SELECTOR, ".wb-busy .wb-spinner"), "no spinner while searching"
        shot(driver, mips, artifacts / "tour-mips-busy.png")
        wait_for(driver, lambda d: button.is_enabled() and button.text == label, 240,
                 "the MIPS search to finish and the button to come back")
        assert "done in" in mips.text and "def program" in mips.text
        assert not mips.find_elements(By.CSS_SELECTOR, '[style*="b00020"]'), "the MIPS search showed an error"
        assert not state(driver)["errors"]
    except BaseException:
        driver.save_screenshot(str(artifacts / "tour-failure.png"))
        raise
