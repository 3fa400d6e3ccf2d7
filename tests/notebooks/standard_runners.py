"""The notebooks executed the way a user executes them: `jupyter nbconvert --to notebook --execute`
and `papermill`, each as its own command line, with this environment's kernel.

The nbconvert run of each notebook is done once per test run and kept under
test-artifacts/executed/<run>/ (pytest-xdist's run id, shared by its workers), so the notebook's content checks and the
offline-HTML browser test (tests/browser/test_notebook_html_offline.py) read the same executed copy;
a file lock keeps two pytest-xdist workers from executing the same notebook twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.notebook_limits import CELL_TIMEOUT_S, SAFETY_FACTOR, assert_within_safety_net
from workbench.notebook_runner import stated_seconds

REPO = Path(__file__).resolve().parents[2]
EXECUTED = REPO / "test-artifacts" / "executed"
BIN = Path(sys.executable).parent
RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"


def command(runner: str, notebook: Path, out_dir: Path) -> list[str]:
    """The command line for `runner` ('nbconvert' or 'papermill') writing into `out_dir`."""
    if runner == "nbconvert":
        return [str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute", str(notebook),
                "--output-dir", str(out_dir), f"--ExecutePreprocessor.timeout={CELL_TIMEOUT_S}"]
    if runner == "papermill":
        return [str(BIN / "papermill"), str(notebook), str(out_dir / notebook.name), "--cwd", str(notebook.parent),
                "--execution-timeout", str(CELL_TIMEOUT_S), "--no-progress-bar", "--kernel", "python3"]
    raise ValueError(f"runner must be 'nbconvert' or 'papermill', not {runner!r}")


def execute(runner: str, notebook: Path, out_dir: Path) -> tuple[Path, float]:
    """Run `notebook` under `runner` into `out_dir`; fail with its output when it fails, or when it is
    far past its stated time (a stall is killed there rather than left to hang the suite)."""
    stated = stated_seconds(notebook)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command(runner, notebook, out_dir), cwd=notebook.parent, capture_output=True,
                              text=True, timeout=SAFETY_FACTOR * stated + 60)
    except subprocess.TimeoutExpired as stalled:
        raise AssertionError(f"{notebook.name} under {runner} was still running after {stalled.timeout:.0f} s "
                             f"({SAFETY_FACTOR}x its stated {stated:.0f} s): a stall") from None
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"{notebook.name} failed under {runner}:\n{done.stderr[-4000:]}"
    assert_within_safety_net(f"{notebook.name} under {runner}", seconds, stated)
    return out_dir / notebook.name, seconds


def executed_by_nbconvert(notebook: Path) -> Path:
    """The executed copy of `notebook` from `jupyter nbconvert --to notebook --execute`, run once in
    this test run and shared by every test that reads it (earlier runs' copies are removed)."""
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()[:16]
    here = EXECUTED / RUN
    folder = here / f"{notebook.stem}-{digest}"
    here.mkdir(parents=True, exist_ok=True)
    for old in EXECUTED.iterdir():
        if old.is_dir() and old != here and time.time() - old.stat().st_mtime > 6 * 3600:
            shutil.rmtree(old, ignore_errors=True)
    with open(here / f"{notebook.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".complete").exists():
            execute("nbconvert", notebook, folder)
            (folder / ".complete").write_text(digest)
    return folder / notebook.name
