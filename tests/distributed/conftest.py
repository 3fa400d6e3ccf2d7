"""One real local Ray cluster (head + one joined node) for the module that asks for it, stopped even on failure."""

from __future__ import annotations

import pytest

from tests.distributed.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def ray_cluster():
    """A `LocalCluster` whose head is booting: call `.ready()` for both nodes, then join `.address`."""
    pytest.importorskip("ray")
    cluster = LocalCluster()
    try:
        cluster.boot()  # both nodes boot while the serial references compute
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
