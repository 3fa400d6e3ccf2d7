"""Wall-clock limits for executed notebooks, as safety nets only: a notebook's outcome is set by its
seeds and step counts, and how long it takes is measured by benchmarks/bench_notebooks.py. A run
fails on time only when it is far past its stated time, with a message that says so."""

from __future__ import annotations

SAFETY_FACTOR = 4  # a loaded 2-core machine (the suite twice at once) measured up to ~2.5x the quiet time
CELL_TIMEOUT_S = 300  # no cell takes more than seconds on a quiet machine; this stops a hang


def assert_within_safety_net(name: str, elapsed: float, stated: float) -> None:
    """Fail if `elapsed` is over SAFETY_FACTOR times the `stated` seconds of the notebook's header."""
    assert elapsed <= SAFETY_FACTOR * stated, (
        f"{name} took {elapsed:.0f} s, more than {SAFETY_FACTOR}x the {stated:.0f} s its header states: "
        "the machine was too slow or the notebook got slower (measure it with benchmarks/bench_notebooks.py)")
