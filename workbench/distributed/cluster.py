"""Joining a Ray cluster: a local one by default (every core), an existing one by address.

`ray` is an optional extra (`pip install recurrent-workbench[ray]`); nothing here imports it until a
fan-out asks for a cluster, so the serial path needs nothing beyond the base install.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ADDRESS_ENV", "ClusterError", "MissingExtraError", "connect", "import_ray", "resolve_address"]

ADDRESS_ENV = "WORKBENCH_RAY_ADDRESS"  # joins this cluster when no address is given


class MissingExtraError(ImportError):
    """An optional dependency that is not installed; the message names the extra that brings it."""


class ClusterError(RuntimeError):
    """The Ray cluster could not be joined, or lost work it could not retry (the message says which)."""


def import_ray() -> ModuleType:
    """The `ray` module, or `MissingExtraError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(
            "fanning out on Ray needs the `ray` package: pip install 'recurrent-workbench[ray]' "
            "(or run without executor=/--ray: the serial path needs nothing extra)"
        ) from exc
    return ray


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: `address`, else $WORKBENCH_RAY_ADDRESS, else None (start a local one)."""
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ValueError(f"address must be a non-empty 'host:port' string or None, got {address!r}")
    return address or os.environ.get(ADDRESS_ENV) or None


def connect(address: str | None = None) -> ModuleType:
    """Join the cluster at `address` (see `resolve_address`) or start a local one on every core.

    A driver already connected stays on its cluster. Returns the `ray` module.
    """
    ray = import_ray()
    target = resolve_address(address)
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reports
    try:
        if target is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=target, configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {target!r}" if target else "a local Ray cluster"
        hint = (
            f" (from ${ADDRESS_ENV})" if target and address is None else ""
        ) + "; start one with `ray start --head` and pass its address, or leave the address out to start one here"
        raise ClusterError(f"could not join {where}{hint}: {type(exc).__name__}: {exc}") from exc
    return ray
