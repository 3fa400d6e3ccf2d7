"""`workbench report`'s page opens in headless Chromium with no network (every request outside the
machine goes to a dead proxy) and shows every section: the heatmaps, and the three plotly figures
drawn by the plotly.js embedded in the page; a real click on a cell of the patching heatmap shows that
patched run's prediction. Screenshots: test-artifacts/report-*.png."""

from __future__ import annotations

import time

import pytest

from tests.test_report import report_page, tiny_checkpoint  # noqa: F401  (fixtures)
from workbench.report import SECTION_IDS

pytestmark = pytest.mark.slow


def test_report_page_renders_every_section_offline(offline_chromium, report_page, artifacts):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = offline_chromium
    driver.set_window_size(1300, 1000)
    driver.get(report_page.resolve().as_uri())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        drawn = driver.execute_script(
            "return document.querySelectorAll('.js-plotly-plot .main-svg').length")
        if drawn >= 4:
            break
        time.sleep(0.5)
    plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    assert len(plots) == 4, "plotly did not draw the four figures (is plotly.js inline?)"
    assert driver.execute_script("return typeof window.Plotly") == "object"
    # Every resource the page loaded came from the file itself (file:, data:, blob:), none from a host.
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.split(":", 1)[0] in ("file", "data", "blob") for u in urls), urls
    for section in SECTION_IDS:
        element = driver.find_element(By.ID, section)
        assert element.find_element(By.TAG_NAME, "h2").is_displayed()
        assert "Not drawn" not in element.text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#cells .wb-c")) > 1000
    assert driver.find_elements(By.CSS_SELECTOR, "#lens .js-plotly-plot .heatmaplayer")
    assert driver.find_elements(By.CSS_SELECTOR, "#implicit-attention .js-plotly-plot .heatmaplayer")
    assert driver.find_elements(By.CSS_SELECTOR, "#steering .js-plotly-plot .scatterlayer .trace")
    assert driver.find_elements(By.CSS_SELECTOR, "#patching .js-plotly-plot .heatmaplayer")
    driver.save_screenshot(str(artifacts / "report-top.png"))
    for section in SECTION_IDS[1:]:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", section)
        time.sleep(0.5)
        driver.save_screenshot(str(artifacts / f"report-{section}.png"))


def test_clicking_a_patching_heatmap_cell_shows_that_patched_runs_prediction(
        offline_chromium, report_page, artifacts):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = offline_chromium
    driver.set_window_size(1300, 1000)
    driver.get(report_page.resolve().as_uri())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not driver.find_elements(
            By.CSS_SELECTOR, "#patching-heatmap .heatmaplayer"):
        time.sleep(0.5)
    driver.execute_script("document.getElementById('patching').scrollIntoView();")
    time.sleep(0.5)
    box = driver.find_element(By.ID, "patching-prediction")
    assert box.text.startswith("click a heatmap cell")
    # The plot area: a click over it lands on plotly's drag layer, which reports the cell under it.
    area = driver.find_element(By.CSS_SELECTOR, "#patching-heatmap .nsewdrag")
    width, height = area.size["width"], area.size["height"]
    seen = set()
    for fx, fy in ((0.9, 0.25), (0.1, 0.75)):  # near the end of the top row, near the start of the bottom
        offset_x, offset_y = int((fx - 0.5) * width), int((fy - 0.5) * height)  # from the centre
        ActionChains(driver).move_to_element_with_offset(area, offset_x, offset_y).click().perform()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (box.text.startswith("click") or box.text in seen):
            time.sleep(0.2)
        assert box.text.startswith("layer ") and "next token" in box.text, box.text
        seen.add(box.text)
    assert len(seen) == 2
    bottom_left, top_right = sorted(seen)  # the y axis runs up: layer 0 is the bottom row
    position = {text[6]: int(text.split("position ", 1)[1].split(":", 1)[0]) for text in seen}
    assert bottom_left.startswith("layer 0, ") and top_right.startswith("layer 1, ")
    assert position["0"] < 8 and position["1"] > 24, position  # of the 32 positions
    driver.save_screenshot(str(artifacts / "report-patching-click.png"))
