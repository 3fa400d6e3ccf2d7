"""Task families beyond the paper's 62: the running sum modulo k for any k (Add_Mod_3..10 by default).

The paper's suite stops at Add_Mod_8; a family shows whether a route to the modular counters holds
for every modulus rather than for the ones that happened to be in the table. The built-in members
are the registered suite tasks; the others are unregistered `Task`s, so the 62-task suite is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from workbench.analysis.mips.tasks import TASKS, Task

__all__ = ["add_mod", "add_mod_family"]


def _running_sum_mod(k: int):
    """Reference function: ys[t] = (x_0 + ... + x_t) mod k."""

    def run(xs: list) -> list:
        total, ys = 0, []
        for x in xs:
            total = (total + x) % k
            ys.append(total)
        return ys

    return run


def add_mod(k: int) -> Task:
    """The running sum modulo `k` over inputs 0..k-1: the suite's task where it has one, else a new `Task`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"add_mod: k must be an integer modulus >= 2, got {k!r}")
    name = f"Add_Mod_{k}"
    if name in TASKS:
        return TASKS[name]
    return Task(
        name,
        _running_sum_mod(k),
        tuple(range(k)),
        description=f"ints 0..{k - 1} -> running sum mod {k} (family member outside the paper's suite)",
        tags=("family",),
    )


def add_mod_family(moduli: Iterable[int] = range(3, 11)) -> list[Task]:
    """One `Task` per modulus, in order: `add_mod(k)` for each k."""
    return [add_mod(k) for k in moduli]
