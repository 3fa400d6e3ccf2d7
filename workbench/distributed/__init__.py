"""Fan-out of independent units (MIPS tasks, tuned-lens layers, patching batches) on Ray, or in process.

`SerialExecutor` (the in-process loop) and `RayExecutor` (a local Ray cluster on every core, or the
cluster at `address` / $WORKBENCH_RAY_ADDRESS) share one `map`; analyses take `executor=` and give the
same numbers under either (docs/cluster.md). `ray` is imported only by `RayExecutor.map`.
"""

from workbench.distributed.cluster import ADDRESS_ENV, ClusterError, MissingExtraError, connect, resolve_address
from workbench.distributed.executor import Executor, RayExecutor, SerialExecutor, UnitStart

__all__ = [
    "ADDRESS_ENV",
    "ClusterError",
    "Executor",
    "MissingExtraError",
    "RayExecutor",
    "SerialExecutor",
    "UnitStart",
    "connect",
    "resolve_address",
]
