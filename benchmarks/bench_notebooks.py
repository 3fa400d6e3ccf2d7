"""How long each notebook takes against the time its header states, measured in one run.

The notebook tests hold each notebook only to a safety net (tests/notebook_limits.py), so that a
loaded machine never fails a test; this is where the time is measured. For each notebook, prints the
wall time, the time its **Time:** paragraph states, their ratio, and the load average before and
after (a ratio above 1 on a quiet machine means the header's claim is wrong).
Run: python benchmarks/bench_notebooks.py [--only 00_tour 05_mips]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from workbench.notebook_runner import execute_notebook, notebooks_dir, stated_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems to run (default: all)")
    args = parser.parse_args()
    notebooks = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if n.stem in args.only]
    print(f"load average at start: {os.getloadavg()[0]:.2f}, cores: {os.cpu_count()}")
    print(f"{'notebook':<28} {'measured s':>10} {'stated s':>9} {'measured/stated':>16} {'load':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # notebooks that write files write them here
        for notebook in notebooks:
            _, seconds = execute_notebook(notebook, timeout=600)
            stated = stated_seconds(notebook)
            print(f"{notebook.stem:<28} {seconds:>10.1f} {stated:>9.0f} {seconds / stated:>16.2f} "
                  f"{os.getloadavg()[0]:>6.2f}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
