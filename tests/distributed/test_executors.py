"""The executors without a cluster: the serial loop's order and callbacks, the address rule, bad arguments."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.mips import run_benchmark
from workbench.distributed import ADDRESS_ENV, RayExecutor, SerialExecutor, resolve_address


def scaled(context: dict, item: int) -> tuple[int, int]:
    return item * context["factor"], torch.get_num_threads()


def test_the_serial_executor_maps_in_order_with_the_context_and_its_threads():
    seen = []
    before = torch.get_num_threads()
    results = SerialExecutor(threads=1).map(
        scaled, [3, 1, 2], context={"factor": 10}, progress=False, on_result=lambda i, r: seen.append((i, r[0]))
    )
    assert [r[0] for r in results] == [30, 10, 20]
    assert {r[1] for r in results} == {1}  # each unit under the executor's thread count
    assert seen == [(0, 30), (1, 10), (2, 20)]
    assert torch.get_num_threads() == before  # restored after each unit


def test_the_address_is_the_argument_then_the_environment_then_a_local_cluster(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert resolve_address(None) is None
    monkeypatch.setenv(ADDRESS_ENV, "10.0.0.5:6379")
    assert resolve_address(None) == "10.0.0.5:6379"
    assert resolve_address("127.0.0.1:7000") == "127.0.0.1:7000"
    assert RayExecutor().address == "10.0.0.5:6379"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"address": ""}, "address must be a non-empty 'host:port' string"),
        ({"cpus": 0}, "cpus must be a positive number, got 0"),
        ({"threads": 0}, "threads must be a positive int or None, got 0"),
        ({"max_retries": -1}, "max_retries must be a non-negative int, got -1"),
    ],
)
def test_bad_executor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RayExecutor(**kwargs)


def test_an_unknown_task_fails_before_any_work_is_sent():
    calls = []

    class Recording(SerialExecutor):
        def map(self, *args, **kwargs):
            calls.append(args)
            return super().map(*args, **kwargs)

    with pytest.raises(KeyError, match="unknown MIPS task"):
        run_benchmark(["Bitwise_Or", "No_Such_Task"], executor=Recording(), verbose=False)
    assert not calls
