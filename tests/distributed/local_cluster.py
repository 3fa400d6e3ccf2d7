"""A real two-node Ray cluster on this machine for the fan-out tests: `ray start --head` plus one node
joined with `--address`, each a `--block` process in its own process group, stopped by process group.

Every port is chosen free (nothing clashes with another cluster on the machine), usage stats are off
(offline), token authentication uses a fresh token passed in the environment, and the temporary
directory is a short one under /tmp: Ray puts Unix sockets there and a
socket path may not pass 107 bytes, which pytest's tmp_path (deeper still under xdist) can.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

READY = "Ray runtime started"
START_LIMIT_S = 240.0  # a safety net: a start on an idle machine takes seconds; the failure says the machine was slow


def free_port() -> int:
    """A TCP port nothing listens on now (bound to 127.0.0.1, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports(node_manager_port: int) -> list[str]:
    """The per-node ports `ray start` would otherwise take at fixed defaults (8265, 52365, ...)."""
    return [
        "--node-manager-port", str(node_manager_port), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
    ]  # fmt: skip


class LocalCluster:
    """`ray start --head` and one joined node on 127.0.0.1, one CPU each; `stop()` ends both process groups."""

    def __init__(self, cpus_per_node: int = 1):
        self.root = Path(tempfile.mkdtemp(prefix="wbray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cpus = cpus_per_node
        # Token authentication with a token of this cluster's own, in the environment: the nodes and the
        # driver (`auth` goes into its os.environ) agree, whatever ~/.ray/auth_token holds.
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        # a loaded machine registers a node slowly: wait longer than the default 30 s before giving up
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                    "RAY_raylet_start_wait_time_s": "120", **self.auth}
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.node_manager_ports: dict[str, int] = {}

    def launch(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.node_manager_ports[name] = free_port()
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--disable-usage-stats",
                  "--object-store-memory", str(100 * 2**20), "--block", *node_ports(self.node_manager_ports[name])]
        self.processes[name] = subprocess.Popen(
            [self.ray, "start", *args, *common], stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,  # its own process group: stop() ends the node's every process
        )

    def start_head(self) -> None:
        self.launch("head", ["--head", "--port", str(self.port), "--temp-dir", str(self.root / "t"),
                             "--include-dashboard", "false", "--dashboard-port", str(free_port())])

    def start_worker(self) -> None:
        self.launch("worker", ["--address", self.address])

    def wait_ready(self, name: str) -> None:
        """Until the node's `ray start` says the runtime started; its log on failure."""
        log, deadline = self.root / f"{name}.log", time.monotonic() + START_LIMIT_S
        while READY not in log.read_text(errors="replace"):
            code = self.processes[name].poll()
            if code is not None or time.monotonic() > deadline:
                slow = f"not up after {START_LIMIT_S:.0f} s (machine too slow?)"
                why = f"exited with {code}" if code is not None else slow
                raise RuntimeError(f"ray {name} node {why}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def gcs_listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def boot(self) -> LocalCluster:
        """Launch the head, and the joined node from a thread as soon as the head's GCS port answers
        (both boot while the caller works); `ready()` waits for them."""
        self.start_head()

        def join() -> None:
            deadline = time.monotonic() + START_LIMIT_S
            while not self.gcs_listening() and self.processes["head"].poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            self.start_worker()

        self.joiner = threading.Thread(target=join, daemon=True)
        self.joiner.start()
        return self

    def ready(self) -> str:
        """Both nodes running (booted if not yet); returns the head's address."""
        if "head" not in self.processes:
            self.boot()
        self.wait_ready("head")
        self.joiner.join()
        self.wait_ready("worker")
        return self.address

    def node_id(self, name: str) -> str:
        """The Ray node id of node `name` ("head" or "worker"), found by its node-manager port (needs `ray.init`)."""
        import ray

        port = self.node_manager_ports[name]
        return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerPort"] == port)

    def stop(self) -> None:
        """SIGTERM each node's process group, SIGKILL what is left after a grace period; remove the temp dir."""
        if getattr(self, "joiner", None) is not None:
            self.joiner.join()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (workers, agents)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        # Ray's workers run in sessions of their own (outside the groups) and exit when their raylet
        # is gone, writing their last logs as they go: remove the directory until it stays removed.
        deadline = time.monotonic() + 10
        while self.root.exists() and time.monotonic() < deadline:
            shutil.rmtree(self.root, ignore_errors=True)
            time.sleep(0.5)
