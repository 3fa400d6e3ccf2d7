"""Concurrent calls on one model: each call's hooks and cache are its own (workbench/models/hook_point.py).

Real threads, one shared model: 4 threads x 50 mixed `run_with_cache` / `run_with_hooks` / `Edit`
calls must give exactly what the same calls give one after another. Before hooks were per call,
3 to 27 of the 31 cache entries per thread held other threads' activations and edits leaked.
"""

from __future__ import annotations

import threading

import pytest
import torch

import workbench
from workbench.models import Edit, position_wise, read_only

THREADS, CALLS = 4, 50
TEXTS = ["def f(x):\n  return", "class A(B):\n  pass", "import os, sys\n", "for i in range(9):"]


@pytest.fixture(scope="module")
def model():
    return workbench.load("lstm-stdlib-2x128")


def make_call(model, thread: int, index: int):
    """The index-th call of a thread: a cache, a Python edit, a position-wise edit or an `Edit`, on
    either path, on that thread's own text; returns a function giving a dict of result tensors."""
    tokens = model.to_tokens(TEXTS[thread])  # [1, pos]
    path = ("fused", "reference")[index % 2]
    kind = (thread + index) % 4
    amount = 1.0 + thread + 0.25 * (index % 5)
    position = 2 + (thread + index) % 5

    def push(c, hook):  # causal: changes positions >= position
        c = c.clone()
        c[:, position:, thread] += amount
        return c

    def steer(x, hook, pos):
        return x + amount * (torch.arange(pos.start, pos.stop) == position).to(x)[None, :, None]

    if kind == 0:
        def call():
            logits, cache = model.run_with_cache(tokens, path=path)
            return {"logits": logits, **cache}
    elif kind == 1:
        def call():
            return {"logits": model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_c", push)], path=path)}
    elif kind == 2:
        def call():
            seen = {}
            logits = model.run_with_hooks(tokens, path=path, fwd_hooks=[
                ("blocks.1.hook_resid_pre", position_wise(steer)),
                ("blocks.1.mixer.hook_h", read_only(lambda h, hook: seen.setdefault("h", h.clone()))),
            ])
            return {"logits": logits, "h": seen["h"]}
    else:
        def call():
            logits, cache = model.run_with_cache(tokens, path=path, names_filter=lambda n: "mixer" in n,
                                                 edits=[Edit("blocks.1.mixer.hook_c", position, "add", amount)])
            return {"logits": logits, **cache, "kernels": cache.metadata["kernels"]}
    return call


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    return a == b


def test_four_threads_of_mixed_hooked_calls_match_the_same_calls_made_serially(model):
    calls = [[make_call(model, t, i) for i in range(CALLS)] for t in range(THREADS)]
    serial = [[call() for call in row] for row in calls]
    results: list[list[dict | None]] = [[None] * CALLS for _ in range(THREADS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(thread: int) -> None:
        try:
            barrier.wait()
            for index, call in enumerate(calls[thread]):
                results[thread][index] = call()
        except BaseException as error:  # reported below, with the thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    assert not errors, errors
    wrong = [
        (t, i, key)
        for t in range(THREADS) for i in range(CALLS)
        for key in serial[t][i]
        if not same(serial[t][i][key], results[t][i][key])
    ]
    assert not wrong, f"{len(wrong)} results differ from the serial run, e.g. {wrong[:5]}"
    assert all(len(row) == CALLS for row in results)


def test_a_hooks_block_in_one_thread_is_invisible_to_another(model):
    tokens = model.to_tokens(TEXTS[0])
    plain = model(tokens)
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def zero_everything(x, hook):
        return torch.zeros_like(x)

    def hooked_thread():
        with model.hooks(fwd_hooks=[("hook_embed", zero_everything)]):
            seen["hooked"] = model(tokens)
            inside.set()
            outside.wait(timeout=60)

    def plain_thread():
        inside.wait(timeout=60)
        seen["plain"] = model(tokens)
        seen["attached elsewhere"] = len(model.hook_dict["hook_embed"].fwd_hooks)
        outside.set()

    threads = [threading.Thread(target=hooked_thread), threading.Thread(target=plain_thread)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert torch.equal(seen["plain"], plain)
    assert not torch.equal(seen["hooked"], plain)
    assert seen["attached elsewhere"] == 0
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0  # the block closed: nothing left behind


def test_model_wide_hooks_still_reach_every_thread_and_reset_removes_them(model):
    tokens = model.to_tokens(TEXTS[1])
    calls = []
    model.add_hook("hook_embed", read_only(lambda x, hook: calls.append(threading.get_ident())))
    try:
        thread = threading.Thread(target=model, args=(tokens,))
        thread.start()
        thread.join(timeout=60)
        model(tokens)
        assert len(set(calls)) == 2  # the other thread's forward and this one's
    finally:
        model.reset_hooks()
    model(tokens)
    assert len(calls) == 2


def test_backward_hooks_of_a_closed_block_still_reach_its_backward(model):
    """Backward hooks are bound to the forward's tensors: a backward after the block still gets them,
    and one thread's backward hooks never fire in another thread's backward."""
    tokens = model.to_tokens(TEXTS[2])
    grads = {}

    def keep(grad, hook):
        grads[threading.get_ident()] = grad.clone()

    loss = model.run_with_hooks(tokens, return_type="loss", bwd_hooks=[("hook_embed", keep)])
    other = threading.Thread(target=lambda: model(tokens, return_type="loss").backward())
    other.start()
    other.join(timeout=60)
    assert grads == {}
    loss.backward()
    assert list(grads) == [threading.get_ident()] and grads[threading.get_ident()].shape == (1, tokens.shape[1], 128)
    model.zero_grad()
