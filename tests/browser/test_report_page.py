"""`workbench report`'s page opens in headless Chromium with no network (every request outside the
machine goes to a dead proxy) and shows every section: the heatmaps, and the three plotly figures
drawn by the plotly.js embedded in the page. Screenshots: test-artifacts/report-*.png."""

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
        if drawn >= 3:
            break
        time.sleep(0.5)
    plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    assert len(plots) == 3, "plotly did not draw the three figures (is plotly.js inline?)"
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
    driver.save_screenshot(str(artifacts / "report-top.png"))
    for section in SECTION_IDS[1:]:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", section)
        time.sleep(0.5)
        driver.save_screenshot(str(artifacts / f"report-{section}.png"))
