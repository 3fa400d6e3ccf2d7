"""Headless Debian Chromium driven by Selenium and Debian's chromedriver, and a JupyterLab server on
localhost: the fixtures of the real-browser tests. Nothing is downloaded: no browser build, no driver
(Selenium Manager is kept offline), no page resource from the network.

Skipped, with the reason, where Chromium, chromedriver or Selenium is missing (`.ci/run` installs
them: `apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)


def find_chromium() -> tuple[str, str] | None:
    """Paths of Debian's chromium and chromedriver, or None where either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None
    )
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/ in the repository root, where screenshots go."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def new_driver(tmp: Path, offline: bool = False) -> object:
    """A headless Chromium session; `offline` also sends every network request to a dead proxy."""
    found = find_chromium()
    if found is None:
        pytest.skip("Debian chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver); .ci/run installs them")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                    "-e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    user_data = tmp / "chromium-profile"
    user_data.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={user_data}")
    if offline:
        options.add_argument("--proxy-server=127.0.0.1:9")  # discard port: nothing off-machine loads
        options.add_argument("--proxy-bypass-list=<-loopback>")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[object]:
    """A fresh headless Chromium (Selenium WebDriver), quit after the test."""
    driver = new_driver(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def offline_chromium(tmp_path: Path) -> Iterator[object]:
    """Headless Chromium that cannot reach anything but files and localhost."""
    driver = new_driver(tmp_path, offline=True)
    try:
        yield driver
    finally:
        driver.quit()


class JupyterLab:
    """A JupyterLab server this test started on 127.0.0.1 with a token, serving `root`."""

    def __init__(self, root: Path, state: Path):
        self.root, self.port, self.token = root, free_port(), os.urandom(16).hex()
        for sub in ("config", "data", "runtime", "settings", "workspaces"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        # Every notebook cell stays in the page (no virtual scrolling), so the test can find them.
        tracker = state / "settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        news = state / "settings" / "@jupyterlab" / "apputils-extension"  # no "fetch news?" toast
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        env = dict(os.environ,
                   JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_DATA_DIR=str(state / "data"),
                   JUPYTER_RUNTIME_DIR=str(state / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
        self.log = (state / "jupyterlab.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            env=env, cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until the server answers /api/status (or fail with its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not start:\n{Path(self.log.name).read_text()[-3000:]}")

    def open_url(self, path: str) -> str:
        """A URL for `path` (relative to root) in JupyterLab that logs in with the token."""
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def stop(self) -> None:
        """Stop the server this fixture started (its own process only)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def jupyterlab_factory(tmp_path: Path) -> Iterator[object]:
    """`start(root)` starts a JupyterLab on a free port with a token; all are stopped after the test."""
    servers: list[JupyterLab] = []

    def start(root: Path) -> JupyterLab:
        server = JupyterLab(root, tmp_path / f"lab-state-{len(servers)}")
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
