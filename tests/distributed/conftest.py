"""One real local Ray cluster (head + one joined node) for the test that asks for it, stopped even on failure."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.distributed.local_cluster import LocalCluster


@pytest.fixture
def ray_cluster():
    """A `LocalCluster` whose head is booting: call `.ready()` for both nodes, then join `.address`."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs the ray extra: pip install 'recurrent-workbench[ray]'")
    cluster = LocalCluster()
    saved = {key: os.environ.get(key) for key in cluster.auth}
    os.environ.update(cluster.auth)  # the driver (this process) authenticates as the nodes do: set before ray loads
    try:
        cluster.boot()  # both nodes boot while the serial references compute
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
