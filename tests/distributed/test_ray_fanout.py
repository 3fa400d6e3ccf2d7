"""Fan-out on a real two-node Ray cluster (`ray start --head` + one node joined with `--address`):
the MIPS suite, tuned-lens fitting, a patching sweep and a sharded recording equal their serial runs
exactly, and a worker killed mid-run (SIGKILL, by pid) is retried with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from tests.analysis.patching.helpers import hooks_of, pair, small
from workbench.analysis.cells import planted_lstm
from workbench.analysis.lens import TunedLens
from workbench.analysis.mips import run_benchmark
from workbench.analysis.mips.suite import SuiteSettings, solve_unit
from workbench.analysis.patching import activation_patching, logit_difference
from workbench.distributed import RayExecutor, SerialExecutor, UnitStart
from workbench.store import record

pytestmark = pytest.mark.slow

# Six quick tasks, each solved by one of its first few networks: the outcome is set by seeds and step
# counts; the budget (work-seconds, the same on every worker) is only a safety net.
MIPS_TASKS = ["Bitwise_Or", "Bitwise_Not", "Current_Number", "Bitwise_And", "Sum_All", "Bit_Shift_Right"]
SAFETY_NET_S = 600.0
LENS_TEXT = "def f(x):\n    return (x + 1) * [x, 2]\n" * 6


def comparable(result) -> tuple:
    """A MIPS result without its wall-clock seconds: row, program and every trained weight."""
    row = {k: v for k, v in result.row().items() if k != "seconds"}
    weights = {k: v.clone() for k, v in result.trained.model.state_dict().items()} if result.trained else {}
    return row, result.program.source if result.program else None, weights


def assert_same_results(serial: list, fanned: list) -> None:
    assert len(fanned) == len(serial)
    for a, b in zip(serial, fanned, strict=True):
        row_a, program_a, weights_a = comparable(a)
        row_b, program_b, weights_b = comparable(b)
        assert row_b == row_a
        assert program_b == program_a
        assert weights_b.keys() == weights_a.keys()
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a), row_a["task"]


def check_mips_suite_equals_serial_with_a_worker_killed_mid_run(ray_cluster) -> None:
    serial = run_benchmark(MIPS_TASKS, budget=SAFETY_NET_S, verbose=False, executor=SerialExecutor(threads=1))
    assert all(r.solved for r in serial), [r.note for r in serial]
    address = ray_cluster.ready()
    killed: list[UnitStart] = []
    starts: list[UnitStart] = []
    joined = None

    def kill_first_unit_on_the_joined_node(start: UnitStart) -> None:
        nonlocal joined
        starts.append(start)
        joined = joined or ray_cluster.node_id("worker")  # the driver is connected by now
        if not killed and start.node == joined:
            os.kill(start.pid, signal.SIGKILL)  # the worker process running this task, mid-task
            killed.append(start)

    executor = RayExecutor(address, on_start=kill_first_unit_on_the_joined_node)
    fanned = run_benchmark(MIPS_TASKS, budget=SAFETY_NET_S, verbose=False, executor=executor)
    assert killed, "no unit ran on the joined node"
    assert [s.index for s in starts].count(killed[0].index) >= 2, "the killed unit was not run again"
    assert len({s.node for s in starts}) == 2  # both nodes worked
    assert [r.task for r in fanned] == MIPS_TASKS  # complete, in order, once each
    assert_same_results(serial, fanned)


def check_tuned_lens_per_layer_equals_serial(ray_cluster) -> None:
    model = planted_lstm(n_layers=3)
    settings = dict(steps=4, batch_size=2, seq_len=16, progress=False)
    serial = TunedLens.from_model(model).fit(LENS_TEXT, executor=SerialExecutor(threads=1), **settings)
    fanned = TunedLens.from_model(model).fit(LENS_TEXT, executor=RayExecutor(ray_cluster.ready()), **settings)
    state, expected = fanned.state_dict(), serial.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert any(serial.translators[i].weight.abs().max() > 0 for i in range(3))  # the fit moved them
    assert fanned.history_ == serial.history_ and len(serial.history_) == 4
    assert fanned.training_ == serial.training_


def check_activation_patching_equals_serial(ray_cluster) -> None:
    model, runs = small("lstm"), pair(batch=2, length=9)
    kwargs = dict(hooks=hooks_of(model), batch_size=4, path="fused")  # 3 batches per site: 30 units
    with torch.no_grad():
        top = int(model(runs.clean)[0, -1].argmax())
    metric = logit_difference(top, (top + 1) % 7)
    serial = activation_patching(model, runs, metric, **kwargs, executor=SerialExecutor(threads=1))
    fanned = activation_patching(model, runs, metric, **kwargs, executor=RayExecutor(ray_cluster.ready()))
    assert serial.effect.abs().max() > 0
    pd.testing.assert_frame_equal(fanned, serial, check_exact=True)
    assert fanned.attrs == serial.attrs


def check_a_units_own_error_reaches_the_driver_as_itself_unretried(ray_cluster) -> None:
    starts: list[UnitStart] = []
    executor = RayExecutor(ray_cluster.ready(), on_start=starts.append)
    with pytest.raises(KeyError, match="unknown MIPS task"):
        executor.map(solve_unit, ["No_Such_Task"], context=SuiteSettings(), progress=False)
    assert [s.index for s in starts] == [0]


def same_file(a: Path, b: Path) -> bool:
    """Equal safetensors files: metadata and every tensor, bit for bit (safetensors orders a header's
    metadata keys by a per-process hash, so the bytes can differ); other files byte for byte."""
    if a.suffix != ".safetensors":
        return a.read_bytes() == b.read_bytes()
    with safe_open(str(a), framework="pt") as x, safe_open(str(b), framework="pt") as y:
        if x.metadata() != y.metadata() or sorted(x.keys()) != sorted(y.keys()):
            return False
        return all(
            x.get_tensor(k).dtype == y.get_tensor(k).dtype and torch.equal(x.get_tensor(k), y.get_tensor(k))
            for k in x.keys()
        )


def check_recording_by_shards_equals_the_serial_store(ray_cluster, tmp_path: Path) -> None:
    model = small("lstm")
    generator = torch.Generator().manual_seed(0)
    corpus = [torch.randint(0, 7, (300,), generator=generator), torch.randint(0, 7, (170,), generator=generator)]
    settings = dict(hooks=["blocks.0.mixer.hook_c", "blocks.1.hook_resid_post"], segment_tokens=64,
                    segments_per_shard=2, reductions=("moments", "topk"))  # 8 segments: 4 shards
    serial = record(model, corpus, tmp_path / "serial", **settings)
    fanned = record(model, corpus, tmp_path / "ray", executor=RayExecutor(ray_cluster.ready()), **settings)
    files = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert sum(name.startswith("shard-") for name in files) == 4
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == files  # no temporaries or duplicates left
    for name in files:
        assert same_file(tmp_path / "serial" / name, tmp_path / "ray" / name), name
    name = "blocks.0.mixer.hook_c"
    assert torch.equal(torch.cat(list(fanned.iter_tensors(name))), torch.cat(list(serial.iter_tensors(name))))


def test_fan_outs_on_a_two_node_cluster_equal_their_serial_runs(ray_cluster, tmp_path):
    # One test, so one cluster under `pytest -n 2` (xdist would split a module's tests between workers,
    # each starting its own cluster); each check names what failed.
    check_mips_suite_equals_serial_with_a_worker_killed_mid_run(ray_cluster)  # its serial run overlaps the boot
    check_tuned_lens_per_layer_equals_serial(ray_cluster)
    check_activation_patching_equals_serial(ray_cluster)
    check_recording_by_shards_equals_the_serial_store(ray_cluster, tmp_path)
    check_a_units_own_error_reaches_the_driver_as_itself_unretried(ray_cluster)
