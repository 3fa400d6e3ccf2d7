"""Run one function over many independent units, in this process or fanned out on Ray.

Both executors have one `map(function, items, context=...)`: `function(context, item)` per item,
results in item order, one progress bar. `SerialExecutor` is the in-process loop; `RayExecutor` sends
each item to a Ray task and `context` once to the object store. The units are the same, so a fanned-out
run gives the serial run's numbers exactly (same torch thread count in every unit; docs/cluster.md).
A worker that dies is retried by Ray; its unit's result is taken once, from the attempt that
finished, so nothing is lost or duplicated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from tqdm.auto import tqdm

from workbench.distributed.cluster import ClusterError, connect, resolve_address
from workbench.threads import torch_threads

__all__ = ["Executor", "RayExecutor", "SerialExecutor", "UnitStart"]

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")
POLL_S = 0.25  # how often the driver drains the workers' start reports while it waits


class UnitStart(tuple):
    """(index, pid, node): unit `index` began on process `pid` of node `node` (a retry reports again)."""

    __slots__ = ()

    def __new__(cls, index: int, pid: int, node: str) -> UnitStart:
        return super().__new__(cls, (index, pid, node))

    @property
    def index(self) -> int:
        return self[0]

    @property
    def pid(self) -> int:
        return self[1]

    @property
    def node(self) -> str:
        return self[2]


class Executor(Protocol):
    """Maps `function(context, item)` over `items`, results in item order."""

    def map(
        self,
        function: Callable[[C, T], R],
        items: Sequence[T],
        *,
        context: C = None,
        desc: str = "",
        progress: bool = True,
        on_result: Callable[[int, R], None] | None = None,
    ) -> list[R]: ...


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads


class SerialExecutor:
    """The in-process loop, unit after unit, each under `threads` torch threads (None: leave torch's)."""

    def __init__(self, threads: int | None = 1):
        self.threads = check_threads(threads)

    def map(self, function, items, *, context=None, desc="", progress=True, on_result=None):
        """`function(context, item)` for each item in order; `on_result(index, result)` after each."""
        results = []
        for index, item in enumerate(tqdm(list(items), desc=desc or None, unit="unit", disable=not progress)):
            with torch_threads(self.threads):
                result = function(context, item)
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results


class RayExecutor:
    """Each unit a Ray task on a cluster (`address`, $WORKBENCH_RAY_ADDRESS, or a local one on every core).

    `cpus` per task, `threads` torch threads inside it (1, as the serial default, keeps numbers
    identical), `max_retries` retries of a unit whose worker or node died. `on_start(UnitStart)` is
    called on the driver as units begin (e.g. to watch which process runs what).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus: float = 1,
        threads: int | None = 1,
        max_retries: int = 3,
        on_start: Callable[[UnitStart], None] | None = None,
    ):
        self.address = resolve_address(address)
        if not isinstance(cpus, int | float) or isinstance(cpus, bool) or cpus <= 0:
            raise ValueError(f"cpus must be a positive number, got {cpus!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, got {max_retries!r}")
        self.cpus, self.threads, self.max_retries = cpus, check_threads(threads), max_retries
        self.on_start = on_start

    def map(self, function, items, *, context=None, desc="", progress=True, on_result=None):
        """`function(context, item)` for each item as Ray tasks; results in item order as they finish."""
        ray = connect(self.address)
        items = list(items)
        tracker = start_log(ray)
        task = ray.remote(run_unit).options(num_cpus=self.cpus, max_retries=self.max_retries, retry_exceptions=False)
        shared = ray.put(context)
        pending = {
            task.remote(function, shared, item, index, tracker, self.threads): index for index, item in enumerate(items)
        }
        results: dict[int, object] = {}
        starts: dict[int, int] = {}
        nodes: set[str] = set()
        bar = tqdm(total=len(items), desc=desc or None, unit="unit", disable=not progress)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for event in ray.get(tracker.drain.remote()):
                    start = UnitStart(*event)
                    starts[start.index] = starts.get(start.index, 0) + 1
                    nodes.add(start.node)
                    if self.on_start is not None:
                        self.on_start(start)
                for ref in done:
                    index = pending.pop(ref)
                    results[index] = self.fetch(ray, ref, index)
                    bar.update(1)
                    if on_result is not None:
                        on_result(index, results[index])
                retried = sum(n - 1 for n in starts.values())
                running = len(set(starts) - set(results))
                bar.set_postfix_str(f"running {running} on {len(nodes)} node(s), retried {retried}", refresh=False)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        return [results[index] for index in range(len(items))]

    def fetch(self, ray, ref, index: int):
        """The unit's result; its own exception re-raised as itself, lost work as `ClusterError`."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise ClusterError(
                f"unit {index} was lost after {self.max_retries} retries ({type(exc).__name__}: {exc}); "
                "raise max_retries or check the cluster's nodes (`ray status`)"
            ) from exc


_START_LOGS: dict[str, object] = {}  # Ray job id -> that driver's StartLog actor


def start_log(ray):
    """This driver's `StartLog` actor, pinned to the driver's node; made once per connection (an actor
    is a process of its own, seconds to start)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    job = context.get_job_id()
    if job not in _START_LOGS:
        here = NodeAffinitySchedulingStrategy(context.get_node_id(), soft=False)
        _START_LOGS[job] = ray.remote(StartLog).options(num_cpus=0, scheduling_strategy=here).remote()
    log = _START_LOGS[job]
    ray.get(log.drain.remote())  # a map stopped by an error may have left reports behind
    return log


class StartLog:
    """A Ray actor on the driver's node: workers report units as they start; the driver drains the log."""

    def __init__(self):
        self.events: list[tuple[int, int, str]] = []

    def started(self, index: int, pid: int, node: str) -> None:
        self.events.append((index, pid, node))

    def drain(self) -> list[tuple[int, int, str]]:
        events, self.events = self.events, []
        return events


def run_unit(function, context, item, index: int, tracker, threads: int | None):
    """Inside a Ray worker: report the start (index, pid, node), then run the unit under `threads`."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    ray.get(tracker.started.remote(index, os.getpid(), node))  # before any work: a kill after this is mid-unit
    with torch_threads(threads):
        return function(context, item)
