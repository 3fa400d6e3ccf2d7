"""Run a notebook under plain `jupyter nbconvert --to notebook --execute` many times in a row and
count the stalls: runs still going after `--stall-after` seconds (the notebook's stated time, by
default) are killed and counted. The standard runner, not the project's, so a lost wake-up between
client and kernel shows here as it would for a user (docs/design.md, "Standard runners").

    .venv/bin/python benchmarks/stress_nbconvert.py                 # the tour, 20 runs
    .venv/bin/python benchmarks/stress_nbconvert.py notebooks/01_cells.ipynb --runs 5
    .venv/bin/python benchmarks/stress_nbconvert.py --runner papermill
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.notebook_runner import stated_seconds  # noqa: E402


def runner_command(runner: str, notebook: Path, out_dir: Path) -> list[str]:
    """The command line a user would type for `runner`, with this interpreter's environment."""
    bin_dir = Path(sys.executable).parent
    if runner == "nbconvert":
        return [str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute", str(notebook),
                "--output-dir", str(out_dir), "--ExecutePreprocessor.timeout=600"]
    return [str(bin_dir / "papermill"), str(notebook), str(out_dir / notebook.name), "--cwd",
            str(notebook.parent), "--execution-timeout", "600", "--no-progress-bar"]


def run_once(runner: str, notebook: Path, stall_after: float) -> tuple[float, bool, int]:
    """(seconds, stalled, exit code) of one run; a stalled run is killed with its kernel."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        process = subprocess.Popen(runner_command(runner, notebook, Path(out)), cwd=notebook.parent,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # its own group: the kernel goes with it
        try:
            code = process.wait(timeout=stall_after)
            return time.perf_counter() - start, False, code
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return time.perf_counter() - start, True, -9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", default=str(ROOT / "notebooks" / "00_tour.ipynb"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runner", choices=("nbconvert", "papermill"), default="nbconvert")
    parser.add_argument("--stall-after", type=float, default=None,
                        help="seconds after which a run counts as stalled (default: the stated time)")
    args = parser.parse_args()
    notebook = Path(args.notebook).resolve()
    stall_after = args.stall_after or stated_seconds(notebook)
    times, stalls, failures = [], 0, 0
    for i in range(args.runs):
        seconds, stalled, code = run_once(args.runner, notebook, stall_after)
        stalls += stalled
        failures += (code != 0 and not stalled)
        if not stalled:
            times.append(seconds)
        verdict = "STALLED (killed)" if stalled else ("failed" if code else "ok")
        print(f"run {i + 1:2d}/{args.runs}: {seconds:6.1f} s  {verdict}", flush=True)
    spread = f"median {statistics.median(times):.1f} s, max {max(times):.1f} s" if times else "no run finished"
    print(f"{notebook.name} under {args.runner}: {stalls} stalled of {args.runs} "
          f"(stall = still running after {stall_after:.0f} s), {failures} failed; finished runs: {spread}")
    return 1 if stalls or failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
